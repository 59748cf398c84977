//! Unit tests of `services`.

use super::*;
use crate::model::kept::{Kept, KeptBackend, KeptVip};

fn ep(s: &str) -> Endpoint {
    s.parse().unwrap()
}

fn spec(s: &str) -> VipSpec {
    VipSpec {
        name: None,
        id: VipId {
            endpoint: ep(s),
            protocol: Protocol::Tcp,
        },
        scheduler: Scheduler::Wrr,
        persistence_timeout: Duration::from_secs(300),
        persistence_netmask: 32,
        persistence_netmask6: 64,
        max_lifetime: Duration::ZERO,
        health_check: None,
        mode: Mode::Tcp,
        cookie: None,
        forwarding: Forwarding::Nat,
        tls: None,
    }
}

#[test]
fn endpoints_parse_with_clear_errors() {
    assert_eq!(ep("198.18.0.100:80").port, 80);
    assert!("198.18.0.100"
        .parse::<Endpoint>()
        .unwrap_err()
        .contains("ADDRESS:PORT"));
    assert!("198.18.0:80"
        .parse::<Endpoint>()
        .unwrap_err()
        .contains("not an IPv4 address"));
    assert!("198.18.0.1:99999"
        .parse::<Endpoint>()
        .unwrap_err()
        .contains("not a port"));
}

#[test]
fn vips_are_validated() {
    let mut s = Services::default();
    s.add_vip(spec("198.18.0.100:80")).unwrap();
    assert!(matches!(
        s.add_vip(spec("198.18.0.100:80")),
        Err(ServiceError::DuplicateVip(_))
    ));
    assert!(matches!(
        s.add_vip(spec("198.18.0.100:0")),
        Err(ServiceError::VipPortZero(_))
    ));
    assert!(matches!(
        s.add_vip(spec("0.0.0.0:80")),
        Err(ServiceError::VipAddress(..))
    ));
    let mut bad = spec("198.18.0.101:80");
    bad.persistence_netmask = 33;
    assert!(matches!(s.add_vip(bad), Err(ServiceError::Netmask(..))));
    // Same address and port, other protocol: a different service.
    let mut udp = spec("198.18.0.100:80");
    udp.id.protocol = Protocol::Udp;
    s.add_vip(udp).unwrap();
    assert_eq!(s.vips().map(|v| v.slot).collect::<Vec<_>>(), vec![0, 1]);
}

#[test]
fn backends_are_validated_and_refusals_change_nothing() {
    let mut s = Services::default();
    s.add_vip(spec("198.18.0.100:80")).unwrap();
    let vip = VipId {
        endpoint: ep("198.18.0.100:80"),
        protocol: Protocol::Tcp,
    };
    s.add_backend(&vip, ep("198.18.1.11:8080"), 1).unwrap();
    let before = s.clone();
    let errs = [
        s.add_backend(&vip, ep("198.18.1.11:8080"), 1),
        s.add_backend(&vip, ep("198.18.1.12:0"), 1),
        s.add_backend(&vip, ep("198.18.1.12:8080"), 0),
        s.add_backend(&vip, ep("198.18.1.12:8080"), MAX_WEIGHT + 1),
        s.add_backend(&vip, ep("255.255.255.255:8080"), 1),
    ];
    assert!(errs.iter().all(Result::is_err), "{errs:?}");
    assert_eq!(s, before);
    let other = VipId {
        endpoint: ep("198.18.0.1:80"),
        protocol: Protocol::Tcp,
    };
    assert_eq!(
        s.add_backend(&other, ep("198.18.1.12:8080"), 1),
        Err(ServiceError::UnknownVip(other))
    );
    assert!(s.remove_backend(&vip, ep("198.18.1.99:8080")).is_err());
    assert_eq!(s, before);
}

#[test]
fn kept_ids_survive_a_reordered_config() {
    let vip = |a: &str| VipId {
        endpoint: ep(a),
        protocol: Protocol::Tcp,
    };
    let mut old = Services::default();
    old.add_vip(spec("198.18.0.100:80")).unwrap();
    old.add_vip(spec("198.18.0.100:81")).unwrap();
    for b in ["198.18.1.11:8080", "198.18.1.12:8080", "198.18.1.13:8080"] {
        old.add_backend(&vip("198.18.0.100:80"), ep(b), 1).unwrap();
    }
    // What the tables would say about `old`.
    let kept = Kept {
        vips: old
            .vips()
            .map(|v| KeptVip {
                id: v.spec.id,
                slot: v.slot,
                persistence_timeout: v.spec.persistence_timeout,
                persistence_netmask: 32,
                persistence_netmask6: 64,
                max_lifetime: Duration::ZERO,
                forwarding: Forwarding::Nat,
            })
            .collect(),
        backends: old
            .vips()
            .flat_map(|v| {
                v.backends.iter().map(|b| KeptBackend {
                    slot: b.slot,
                    vip_slot: v.slot,
                    endpoint: b.endpoint,
                    gen: b.gen,
                    active: true,
                })
            })
            .collect(),
    };
    // The new config lists VIPs and backends in another order, drops
    // .12 and adds .14.
    let mut new = Services::default();
    new.add_vip(spec("198.18.0.100:81")).unwrap();
    new.add_vip(spec("198.18.0.100:80")).unwrap();
    for b in ["198.18.1.14:8080", "198.18.1.13:8080", "198.18.1.11:8080"] {
        new.add_backend(&vip("198.18.0.100:80"), ep(b), 1).unwrap();
    }
    let moved = new.on_kept_ids(&kept).unwrap();
    let slot_of = |s: &Services, v: &str| s.vip(&vip(v)).unwrap().slot;
    assert_eq!(
        slot_of(&moved, "198.18.0.100:80"),
        slot_of(&old, "198.18.0.100:80")
    );
    assert_eq!(
        slot_of(&moved, "198.18.0.100:81"),
        slot_of(&old, "198.18.0.100:81")
    );
    let ids = |s: &Services, b: &str| {
        s.vip(&vip("198.18.0.100:80"))
            .unwrap()
            .backends
            .iter()
            .find(|x| x.endpoint == ep(b))
            .map(|x| (x.slot, x.gen))
    };
    assert_eq!(
        ids(&moved, "198.18.1.11:8080"),
        ids(&old, "198.18.1.11:8080")
    );
    assert_eq!(
        ids(&moved, "198.18.1.13:8080"),
        ids(&old, "198.18.1.13:8080")
    );
    // The new backend does not take the slot of the dropped one, whose
    // connections may still be open.
    let (slot, gen) = ids(&moved, "198.18.1.14:8080").unwrap();
    assert_ne!(Some(slot), ids(&old, "198.18.1.12:8080").map(|x| x.0));
    assert_eq!(gen, 1);
    // The selection table covers the three backends once each.
    let mut table = moved.vip(&vip("198.18.0.100:80")).unwrap().table.clone();
    table.sort_unstable();
    let mut want: Vec<u32> = ["198.18.1.11:8080", "198.18.1.13:8080", "198.18.1.14:8080"]
        .iter()
        .map(|b| ids(&moved, b).unwrap().0)
        .collect();
    want.sort_unstable();
    assert_eq!(table, want);
    // A slot reused later gets a generation above the kept one.
    let shadow = Services::from_kept(&kept);
    assert_eq!(shadow.vips().count(), 2);
    let mut again = moved.clone();
    again
        .add_backend(&vip("198.18.0.100:81"), ep("198.18.1.12:8080"), 1)
        .unwrap();
    let b = &again.vip(&vip("198.18.0.100:81")).unwrap().backends[0];
    let old12 = ids(&old, "198.18.1.12:8080").unwrap();
    if b.slot == old12.0 {
        assert!(b.gen > old12.1);
    }
}

#[test]
fn down_and_draining_backends_leave_the_selection_table() {
    let mut s = Services::default();
    s.add_vip(spec("198.18.0.100:80")).unwrap();
    let vip = VipId {
        endpoint: ep("198.18.0.100:80"),
        protocol: Protocol::Tcp,
    };
    for b in ["198.18.1.11:8080", "198.18.1.12:8080", "198.18.1.13:8080"] {
        s.add_backend(&vip, ep(b), 1).unwrap();
    }
    let b = |s: &Services, i: usize| s.vip(&vip).unwrap().backends[i].clone();
    s.set_down(&vip, ep("198.18.1.11:8080"), true).unwrap();
    assert_eq!(s.vip(&vip).unwrap().table, vec![1, 2]);
    assert_eq!(b(&s, 0).state(), "down");
    assert!(!b(&s, 0).keeps_sessions());
    s.drain(&vip, ep("198.18.1.12:8080"), false).unwrap();
    assert_eq!(s.vip(&vip).unwrap().table, vec![2]);
    assert_eq!(b(&s, 1).state(), "draining");
    assert!(b(&s, 1).keeps_sessions(), "plain drain keeps its clients");
    s.drain(&vip, ep("198.18.1.12:8080"), true).unwrap();
    assert!(!b(&s, 1).keeps_sessions(), "--repin moves them");
    s.drain(&vip, ep("198.18.1.13:8080"), false).unwrap();
    assert!(
        s.vip(&vip).unwrap().table.is_empty(),
        "none takes new clients"
    );
    s.enable(&vip, ep("198.18.1.13:8080")).unwrap();
    s.set_down(&vip, ep("198.18.1.11:8080"), false).unwrap();
    assert_eq!(s.vip(&vip).unwrap().table, vec![0, 2]);
    let before = s.clone();
    assert_eq!(
        s.enable(&vip, ep("198.18.1.13:8080")),
        Err(ServiceError::NotDraining {
            vip,
            backend: ep("198.18.1.13:8080")
        })
    );
    assert_eq!(
        s.drain(&vip, ep("198.18.1.99:8080"), false),
        Err(ServiceError::UnknownBackend {
            vip,
            backend: ep("198.18.1.99:8080")
        })
    );
    assert_eq!(s, before, "refusals change nothing");
}

#[test]
fn backend_slots_are_reused_with_a_new_generation() {
    let mut s = Services::default();
    s.add_vip(spec("198.18.0.100:80")).unwrap();
    let vip = VipId {
        endpoint: ep("198.18.0.100:80"),
        protocol: Protocol::Tcp,
    };
    s.add_backend(&vip, ep("198.18.1.11:8080"), 2).unwrap();
    s.add_backend(&vip, ep("198.18.1.12:8080"), 1).unwrap();
    assert_eq!(s.vip(&vip).unwrap().table, vec![0, 1, 0]);
    let gone = s.remove_backend(&vip, ep("198.18.1.11:8080")).unwrap();
    assert_eq!((gone.slot, gone.gen), (0, 1));
    assert_eq!(s.vip(&vip).unwrap().table, vec![1]);
    s.add_backend(&vip, ep("198.18.1.13:8080"), 1).unwrap();
    let b = s
        .vip(&vip)
        .unwrap()
        .backends
        .iter()
        .find(|b| b.endpoint == ep("198.18.1.13:8080"))
        .unwrap();
    assert_eq!((b.slot, b.gen), (0, 2));
}
