use super::*;
use crate::model::config::Config;

const S: u64 = 1_000_000_000;

fn services(extra_backend: bool) -> Services {
    let backends = if extra_backend {
        "[ { address: 198.18.1.11, port: 80 }, { address: 198.18.1.12, port: 80 }, { address: 198.18.1.13, port: 80 } ]"
    } else {
        "[ { address: 198.18.1.11, port: 80 }, { address: 198.18.1.12, port: 80 } ]"
    };
    let text = format!(
        "vips:\n  - address: 198.18.0.100\n    port: 80\n    persistence: {{ timeout: 40s }}\n    backends: {backends}\n  - address: 198.18.0.101\n    port: 80\n    backends: [ {{ address: 198.18.1.11, port: 80 }} ]\n"
    );
    Config::parse(&text, "test").unwrap().1
}

fn record() -> Record {
    Record {
        instance: 0xabc,
        node: "lb-a".into(),
        vip: parse_vip("198.18.0.100:80/tcp").unwrap(),
        client: "198.18.3.7".parse().unwrap(),
        backend: "198.18.1.12:80".parse().unwrap(),
        last_seen_ms: 1_700_000_010_000,
        created_ms: 1_700_000_000_000,
        new: true,
    }
}

#[test]
fn records_survive_the_stream_fields() {
    let r = record();
    let fields = r.fields();
    let back = Record::parse(|name| {
        fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    })
    .unwrap();
    assert_eq!(back, r);
    assert_eq!(fields[2].1, "198.18.0.100:80/tcp");
    // Without the kind (an older publisher), a refresh.
    let old = Record::parse(|name| {
        fields
            .iter()
            .find(|(n, _)| *n == name && name != "k")
            .map(|(_, v)| v.as_str())
    })
    .unwrap();
    assert!(!old.new);
    // A broken entry names its field.
    let err = Record::parse(|name| match name {
        "s" => Some("yesterday"),
        _ => fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str()),
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "field \"s\": \"yesterday\" is not milliseconds"
    );
    let err = Record::parse(|name| (name != "b").then_some("1")).unwrap_err();
    assert_eq!(err, RecordError::Missing("b"));
    assert!(parse_vip("198.18.0.100:80/sctp").is_none());
}

#[test]
fn clocks_translate_both_ways() {
    let c = Clocks {
        mono_ns: 500 * S,
        wall_ms: 1_700_000_000_000,
    };
    // 3 s ago here is 3 s ago on the wall clock, and back.
    assert_eq!(c.wall_of(497 * S), 1_699_999_997_000);
    assert_eq!(c.mono_of(1_699_999_997_000), 497 * S);
    // A time ahead of this clock counts as now; one before boot as 0.
    assert_eq!(c.mono_of(1_700_000_005_000), 500 * S);
    assert_eq!(c.mono_of(1_000), 0);
}

#[test]
fn the_newest_last_seen_wins_and_expired_ones_never_return() {
    let s = |last: u64, backend: u32| Session {
        last_seen_ns: last * S,
        backend_id: backend,
        backend_gen: 1,
        created_ns: S,
    };
    let now = 100 * S;
    // Arrived here: last used `last` (this host's clock), created at 1 s.
    let p = |last: u64, lifetime: u64| Placement {
        key: SessionKey::default(),
        session: s(last, 1),
        timeout_ns: 40 * S,
        lifetime_ns: lifetime * S,
        idle_ns: (now - last * S),
        age_ns: now - S,
    };
    assert_eq!(merge(None, &p(90, 0), now), Merge::Install);
    assert_eq!(merge(Some(&s(80, 2)), &p(90, 0), now), Merge::Install);
    assert_eq!(merge(Some(&s(95, 2)), &p(90, 0), now), Merge::KeepLocal);
    assert_eq!(merge(Some(&s(90, 2)), &p(90, 0), now), Merge::KeepLocal);
    // Idle past this host's timeout: not brought back, whatever is here.
    assert_eq!(merge(None, &p(60, 0), now), Merge::Expired);
    assert_eq!(merge(Some(&s(50, 1)), &p(60, 0), now), Merge::Expired);
    // Past its lifetime (created at 1 s).
    assert_eq!(merge(None, &p(90, 50), now), Merge::Expired);
    // A local entry that is no longer live does not hold a live one off.
    // (Here: created at 0, lifetime 95 s, over; the incoming one is 50 s old.)
    let mut dead = s(95, 2);
    dead.created_ns = 0;
    let young = Placement {
        age_ns: 50 * S,
        ..p(90, 95)
    };
    assert_eq!(merge(Some(&dead), &young, now), Merge::Install);
    let alive = Session {
        created_ns: 10 * S,
        ..s(95, 2)
    };
    assert_eq!(merge(Some(&alive), &young, now), Merge::KeepLocal);
    // Judged by the wall clocks: an hour-old record on a host up for two
    // minutes (its monotonic time clamps to 0) is still expired.
    let booted = Clocks {
        mono_ns: 120 * S,
        wall_ms: 1_700_000_000_000,
    };
    let mut r = record();
    r.last_seen_ms = booted.wall_ms - 3_600_000;
    r.created_ms = r.last_seen_ms;
    let d = Directory::new(&services(false));
    r.vip = d.by_slot.values().next().copied().unwrap();
    let placed = d.place(&r, &booted).unwrap();
    assert_eq!(placed.session.last_seen_ns, 0);
    assert_eq!(merge(None, &placed, booted.mono_ns), Merge::Expired);
}

#[test]
fn records_travel_by_address_and_land_on_the_receivers_ids() {
    let a = services(false);
    let b = services(true);
    let (da, db) = (Directory::new(&a), Directory::new(&b));
    let vip = a.vips().next().unwrap();
    let b12 = vip
        .backends
        .iter()
        .find(|b| b.endpoint.port == 80 && b.endpoint.v4().octets()[3] == 12)
        .unwrap();
    let clocks = Clocks {
        mono_ns: 1000 * S,
        wall_ms: 1_700_000_000_000,
    };
    let key = SessionKey {
        vip_id: vip.slot,
        client: u32::from_ne_bytes([198, 18, 3, 7]),
    };
    let session = Session {
        last_seen_ns: 990 * S,
        backend_id: b12.slot,
        backend_gen: b12.gen,
        created_ns: 900 * S,
    };
    let r = da.record(&key, &session, &clocks, (1, "lb-a")).unwrap();
    assert_eq!(r.backend.to_string(), "198.18.1.12:80");
    assert_eq!(r.client.to_string(), "198.18.3.7");
    assert_eq!(r.last_seen_ms, 1_699_999_990_000);
    // Another host, another clock: the same age there.
    let there = Clocks {
        mono_ns: 77 * S,
        wall_ms: 1_700_000_001_000,
    };
    let p = db.place(&r, &there).unwrap();
    let vb = b.vips().next().unwrap();
    let b12b = vb
        .backends
        .iter()
        .find(|x| x.endpoint == r.backend)
        .unwrap();
    assert_eq!(p.key.vip_id, vb.slot);
    assert_eq!(
        (p.session.backend_id, p.session.backend_gen),
        (b12b.slot, b12b.gen)
    );
    assert_eq!(p.session.last_seen_ns, 66 * S);
    assert_eq!(p.timeout_ns, 40 * S);
    // Not shared: a VIP without persistence, an unknown backend.
    let mut other = r.clone();
    other.vip = parse_vip("198.18.0.101:80/tcp").unwrap();
    assert_eq!(db.place(&other, &there), Err(Unplaced::Vip));
    let mut other = r.clone();
    other.backend = "198.18.1.99:80".parse().unwrap();
    assert_eq!(db.place(&other, &there), Err(Unplaced::Backend));
    let mut other = r;
    other.client = "2001:db8::1".parse().unwrap();
    assert_eq!(db.place(&other, &there), Err(Unplaced::Client));
}

#[test]
fn a_backend_taking_no_sessions_is_not_a_place() {
    let mut s = services(false);
    let vip = s.vips().next().unwrap().spec.id;
    s.drain(&vip, "198.18.1.12:80".parse().unwrap(), true)
        .unwrap();
    let d = Directory::new(&s);
    let mut r = record();
    r.vip = vip;
    let clocks = Clocks {
        mono_ns: 1000 * S,
        wall_ms: 1_700_000_010_000,
    };
    assert_eq!(d.place(&r, &clocks), Err(Unplaced::Backend));
    r.backend = "198.18.1.11:80".parse().unwrap();
    assert!(d.place(&r, &clocks).is_ok());
}

#[test]
fn passes_come_a_quarter_timeout_apart() {
    let d = Directory::new(&services(false));
    let slot = services(false).vips().next().unwrap().slot;
    let mut p = Passes::default();
    // The first pass publishes every live session.
    assert_eq!(p.due(&d, 100 * S).get(&slot), Some(&0));
    assert!(
        p.due(&d, 105 * S).is_empty(),
        "timeout 40 s: not before 10 s"
    );
    assert_eq!(p.due(&d, 110 * S).get(&slot), Some(&(100 * S)));
    p.reset();
    assert_eq!(p.due(&d, 111 * S).get(&slot), Some(&0));
}
