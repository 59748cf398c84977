//! Live operations end to end in the veth lab (plain layout, default
//! attach): health checks with failover, every backend down, drain and
//! enable, and the session lifetime. Real servers are killed with
//! `kill -9` and restarted. The tests run one at a time.

use std::time::{Duration, Instant};

use lb_tests::lab::{all_ok, backends_of, serial, wait_for, Lab, Layout, VIP};

/// A VIP block on 198.18.0.100:`port` with backends b`n` (198.18.1.1n:8080),
/// round robin, and `extra` YAML lines (indented 4) before the backends.
fn vip(port: u16, persistence: &str, extra: &str, backends: &[u8]) -> String {
    let mut s = format!(
        "  - address: {VIP}\n    port: {port}\n    persistence: {persistence}\n{extra}    backends:\n"
    );
    for b in backends {
        s.push_str(&format!(
            "      - {{ address: 198.18.1.{}, port: 8080 }}\n",
            10 + b
        ));
    }
    s
}

/// Wait until the controller's log contains `text`; returns how long it
/// took.
#[track_caller]
fn wait_log(lab: &Lab, text: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    wait_for(timeout, || lab.controller_log().contains(text))
        .unwrap_or_else(|_| panic!("no {text:?} in the log:\n{}", lab.controller_log()));
    start.elapsed()
}

fn one(lab: &Lab, client: usize, port: u16) -> String {
    let r = lab.http(client, port, &["--count", "1"]).unwrap();
    all_ok(&r, lab);
    r[0].backend().unwrap().to_string()
}

/// TCP checks: a killed server is taken out within `fall × interval +
/// timeout`; its sticky client moves with no failed request, another
/// client is untouched; restarted, it takes new clients again.
#[test]
fn a_killed_backend_fails_over_and_comes_back() {
    let _g = serial();
    let mut lab = Lab::up("lbh-tcp", Layout::Plain, 2, 3).unwrap();
    let check =
        "    health_check: { kind: tcp, interval: 500ms, timeout: 250ms, rise: 2, fall: 2 }\n";
    lab.start_balancer(&format!(
        "vips:\n{}{}",
        vip(80, "{ timeout: 300s }", check, &[1, 2, 3]),
        vip(81, "{ timeout: 0s }", check, &[1, 2, 3]),
    ))
    .unwrap();
    assert_eq!(one(&lab, 0, 80), "b1");
    assert_eq!(one(&lab, 1, 80), "b2");
    let listing = lab.ctl(&["backend", "list"]).unwrap();
    assert!(listing.contains("198.18.1.11:8080       up"), "{listing}");

    let killed = std::time::SystemTime::now();
    lab.kill_backend(0).unwrap();
    let down = "VIP 198.18.0.100:80/tcp: backend 198.18.1.11:8080 is down: 2 failed check(s) in a row: connect";
    wait_log(&lab, down, Duration::from_secs(10));
    // The README's bound, fall × interval + timeout = 1.25 s, measured to
    // the controller's own log time of the verdict (not to when this test
    // polled the log), plus 2 s for a busy 2-core machine scheduling the
    // check tasks late.
    let log = lab.controller_log();
    let line = log.lines().find(|l| l.contains(down)).unwrap();
    let at = humantime::parse_rfc3339_weak(&line[1..25]).unwrap();
    let took = at.duration_since(killed).unwrap_or_default();
    assert!(
        took <= Duration::from_millis(1250 + 2000),
        "detected {took:?} after the kill: {line}"
    );
    wait_log(
        &lab,
        "VIP 198.18.0.100:81/tcp: backend 198.18.1.11:8080 is down",
        Duration::from_secs(5),
    );
    // The sticky client moves at once and stays; no request fails.
    let moved = lab.http(0, 80, &["--count", "5"]).unwrap();
    all_ok(&moved, &lab);
    let to = moved[0].backend().unwrap().to_string();
    assert_ne!(to, "b1");
    assert_eq!(backends_of(&moved), vec![to; 5]);
    assert_eq!(
        backends_of(&lab.http(1, 80, &["--count", "3"]).unwrap()),
        vec!["b2"; 3],
        "a client of another backend is untouched"
    );
    let plain = lab.http(1, 81, &["--count", "6"]).unwrap();
    all_ok(&plain, &lab);
    assert_eq!(plain.len(), 6, "{plain:?}");
    assert!(!backends_of(&plain).contains(&"b1".to_string()));
    let listing = lab.ctl(&["backend", "list"]).unwrap();
    assert!(listing.contains("198.18.1.11:8080       down"), "{listing}");
    let stats = lab.ctl(&["stats"]).unwrap();
    assert!(
        stats.contains(
            "lb_backend_up{vip=\"198.18.0.100:80\",protocol=\"tcp\",backend=\"198.18.1.11:8080\"} 0"
        ),
        "{stats}"
    );

    lab.start_backend(0).unwrap();
    wait_log(
        &lab,
        "VIP 198.18.0.100:81/tcp: backend 198.18.1.11:8080 is up: 2 successful check(s) in a row",
        Duration::from_secs(10),
    );
    let plain = lab.http(1, 81, &["--count", "6"]).unwrap();
    all_ok(&plain, &lab);
    assert!(
        backends_of(&plain).contains(&"b1".to_string()),
        "it takes new clients again: {plain:?}"
    );
}

/// HTTP checks: a 500 counts as a failure. With every backend down, new
/// connections are dropped, counted and logged once; one back, they flow.
#[test]
fn http_checks_and_every_backend_down() {
    let _g = serial();
    let mut lab = Lab::up("lbh-http", Layout::Plain, 1, 2).unwrap();
    // Two checks either way: one slow answer on a busy machine must not
    // flip a backend (and break "logged once").
    let check = "    health_check: { kind: http, path: /health, interval: 500ms, timeout: 500ms, rise: 2, fall: 2 }\n";
    lab.start_balancer(&format!(
        "vips:\n{}",
        vip(80, "{ timeout: 300s }", check, &[1, 2])
    ))
    .unwrap();
    assert_eq!(one(&lab, 0, 80), "b1");
    lab.set_sick(0, true).unwrap();
    wait_log(
        &lab,
        "backend 198.18.1.11:8080 is down: 2 failed check(s) in a row: GET /health answered 500",
        Duration::from_secs(10),
    );
    assert_eq!(one(&lab, 0, 80), "b2", "moved off the failing backend");
    lab.set_sick(1, true).unwrap();
    wait_log(
        &lab,
        "VIP 198.18.0.100:80/tcp: no backend up; new connections are dropped",
        Duration::from_secs(10),
    );
    let listing = lab.ctl(&["backend", "list"]).unwrap();
    assert!(listing.contains("no backend up"), "{listing}");
    let dropped = lab
        .http(0, 80, &["--count", "1", "--timeout-ms", "500"])
        .unwrap();
    assert!(dropped[0].backend().is_none(), "{dropped:?}");
    let stats = lab.ctl(&["stats"]).unwrap();
    assert!(
        !stats.contains("lb_datapath_events_total{reason=\"drop_no_backend\"} 0"),
        "{stats}"
    );
    lab.set_sick(0, false).unwrap();
    wait_log(
        &lab,
        "VIP 198.18.0.100:80/tcp: a backend takes new clients again",
        Duration::from_secs(10),
    );
    let back = lab.http(0, 80, &["--count", "3"]).unwrap();
    all_ok(&back, &lab);
    assert_eq!(backends_of(&back), vec!["b1"; 3]);
    assert_eq!(
        lab.controller_log().matches("no backend up").count(),
        1,
        "logged once per transition"
    );
}

/// Drain: the sticky client keeps its backend and its long-lived
/// connection, new clients never get it, `--repin` moves a client, and
/// the moment it can be removed safely is reported; `enable` brings it back.
#[test]
fn drain_keeps_logged_in_users_and_reports_when_safe_to_remove() {
    let _g = serial();
    let mut lab = Lab::up("lbh-drain", Layout::Plain, 2, 3).unwrap();
    lab.start_balancer(&format!(
        "vips:\n{}{}timeouts: {{ tcp_closing: 1s }}\nsweeper: {{ interval: 1s }}\n",
        vip(80, "{ timeout: 2s }", "", &[1, 2, 3]),
        vip(81, "{ timeout: 0s }", "", &[1, 2, 3]),
    ))
    .unwrap();
    let vip80 = format!("{VIP}:80");
    let vip81 = format!("{VIP}:81");
    assert_eq!(one(&lab, 0, 80), "b1");
    assert_eq!(one(&lab, 1, 80), "b2");
    // Keep client 0's session alive and a long-lived connection open.
    let long = lab
        .http_background(
            0,
            80,
            &["--count", "40", "--keepalive", "--interval-ms", "100"],
        )
        .unwrap();
    for vip in [&vip80, &vip81] {
        let out = lab
            .ctl(&["backend", "drain", vip, "198.18.1.11:8080"])
            .unwrap();
        assert!(out.contains("is draining"), "{out}");
    }
    let sticky = lab.http(0, 80, &["--count", "3"]).unwrap();
    assert_eq!(backends_of(&sticky), vec!["b1"; 3], "the session is kept");
    let plain = lab.http(1, 81, &["--count", "6"]).unwrap();
    all_ok(&plain, &lab);
    assert_eq!(plain.len(), 6, "{plain:?}");
    assert!(
        !backends_of(&plain).contains(&"b1".to_string()),
        "no new client: {plain:?}"
    );
    let listing = lab.ctl(&["backend", "list", &vip80]).unwrap();
    let row = listing
        .lines()
        .find(|l| l.contains("198.18.1.11:8080"))
        .unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[3], "draining", "{listing}");
    assert!(
        cols[7].parse::<u64>().unwrap() >= 1,
        "a live session: {row}"
    );
    assert!(!lab
        .controller_log()
        .contains("VIP 198.18.0.100:80/tcp: draining backend 198.18.1.11:8080"));
    // --repin: client 1 leaves b2 at its next connection.
    lab.ctl(&["backend", "drain", &vip80, "198.18.1.12:8080", "--repin"])
        .unwrap();
    assert_eq!(one(&lab, 1, 80), "b3");
    // Bad input names the thing.
    let err = lab
        .ctl(&["backend", "drain", &vip80, "198.18.1.99:8080"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("backend 198.18.1.99:8080 does not exist"),
        "{err}"
    );
    let err = lab
        .ctl(&["backend", "enable", &vip80, "198.18.1.13:8080"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not draining"), "{err}");
    // The long-lived connection went on; once it and the session are over,
    // the log says b1 can go.
    let long = Lab::replies(long).unwrap();
    all_ok(&long, &lab);
    assert_eq!(backends_of(&long), vec!["b1"; 40]);
    wait_log(
        &lab,
        "VIP 198.18.0.100:80/tcp: draining backend 198.18.1.11:8080 has no live connection or session left; it can be removed safely",
        Duration::from_secs(15),
    );
    lab.ctl(&["backend", "enable", &vip81, "198.18.1.11:8080"])
        .unwrap();
    let plain = lab.http(1, 81, &["--count", "6"]).unwrap();
    assert!(backends_of(&plain).contains(&"b1".to_string()), "{plain:?}");
}

/// `max_lifetime`: a busy client moves once its session is that old; with
/// `0s` the same client does not.
#[test]
fn max_lifetime_moves_a_busy_client() {
    let _g = serial();
    let mut lab = Lab::up("lbh-life", Layout::Plain, 1, 3).unwrap();
    lab.start_balancer(&format!(
        "vips:\n{}{}",
        vip(80, "{ timeout: 300s, max_lifetime: 2s }", "", &[1, 2, 3]),
        vip(81, "{ timeout: 300s, max_lifetime: 0s }", "", &[1, 2, 3]),
    ))
    .unwrap();
    // One new connection every 200 ms for about 3.6 s, on both VIPs.
    let limited = lab
        .http_background(0, 80, &["--count", "18", "--interval-ms", "200"])
        .unwrap();
    let unlimited = lab
        .http_background(0, 81, &["--count", "18", "--interval-ms", "200"])
        .unwrap();
    let limited = Lab::replies(limited).unwrap();
    let unlimited = Lab::replies(unlimited).unwrap();
    all_ok(&limited, &lab);
    all_ok(&unlimited, &lab);
    // The client moves when its session is 2 s old, and stays on each
    // backend for a while: a slow machine may stretch the 18 requests over
    // more than one lifetime, so it may move more than once, but every
    // pinning before the last one holds for several requests (2 s at one
    // request per 200 ms).
    let seq = backends_of(&limited);
    let mut runs: Vec<(String, usize)> = Vec::new();
    for b in &seq {
        match runs.last_mut() {
            Some((last, n)) if last == b => *n += 1,
            _ => runs.push((b.clone(), 1)),
        }
    }
    assert!(runs.len() >= 2, "never moved: {seq:?}");
    assert!(
        runs[..runs.len() - 1].iter().all(|(_, n)| *n >= 3),
        "each pinning holds until the lifetime ends: {seq:?}"
    );
    let seq = backends_of(&unlimited);
    assert_eq!(seq, vec![seq[0].clone(); 18], "no lifetime: it stays");
}

/// An upgrade from a build whose tables are laid out as version 5 (before
/// the new-flow path's fixed tables): the attach moves the kept maps into
/// this build's directory, and a long-lived connection and the client's
/// session survive. The v5 directory is made from a running data path's
/// own: its maps this build lays out differently are replaced with maps of
/// the v5 shapes (`bpftool map create`).
#[test]
fn an_upgrade_from_layout_v5_keeps_connections_and_sessions() {
    let _g = serial();
    let mut lab = Lab::up("lbl-v5", Layout::Plain, 2, 3).unwrap();
    let cfg = format!("vips:\n{}", vip(80, "{ timeout: 300s }", "", &[1, 2, 3]));
    lab.start_balancer_with(&cfg, &["--keep-state"]).unwrap();
    // Client 2 first, so that a fresh start would give client 1 another
    // backend than the one it is pinned to.
    one(&lab, 1, 80);
    let pinned = one(&lab, 0, 80);
    let mut long = lb_tests::lab::Running::new(
        lab.http_background(
            0,
            80,
            &["--count", "60", "--keepalive", "--interval-ms", "100"],
        )
        .unwrap(),
    )
    .unwrap();
    long.next_reply().unwrap();
    assert!(lab.stop_balancer().unwrap().success());
    // The pins as a layout-v5 build leaves them.
    let root = lab.bpffs().join("lb");
    let (v5, ours) = (
        root.join("v5"),
        root.join(format!("v{}", lb_common::LAYOUT_VERSION)),
    );
    std::fs::rename(&ours, &v5).unwrap();
    for (name, kind, key, value, entries) in [
        ("HALF_OPEN", "lru_hash", 16, 48, 2 * 131_072),
        ("PENDING", "lru_hash", 8, 24, 131_072),
        ("SETTINGS", "array", 4, 32, 1),
        ("REASONS", "percpu_array", 4, 8, 19),
    ] {
        let path = v5.join(name);
        std::fs::remove_file(&path).unwrap();
        let out = std::process::Command::new("bpftool")
            .args(["map", "create"])
            .arg(&path)
            .args(["type", kind, "key", &key.to_string(), "value"])
            .args([value.to_string(), "entries".into(), entries.to_string()])
            .args(["name", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "bpftool: {out:?}");
    }
    lab.start_balancer_with(&cfg, &["--keep-state"]).unwrap();
    wait_log(
        &lab,
        "upgrade: moved the tables of layout v5",
        Duration::from_secs(5),
    );
    assert!(!v5.exists() && ours.join("CONNS").exists());
    assert!(
        lab.controller_log()
            .contains("took over the running data path on eth0"),
        "{}",
        lab.controller_log()
    );
    // The session held: client 1's new connections stay on its backend,
    // and its long-lived connection goes on.
    for _ in 0..5 {
        assert_eq!(one(&lab, 0, 80), pinned);
    }
    let long = long.finish().unwrap();
    all_ok(&long, &lab);
    assert_eq!(backends_of(&long), vec![pinned.clone(); 60]);
}
