//! End to end in the veth lab: real clients, real backends, the real
//! controller and XDP program. The tests share the machine's CPUs and a
//! socket directory, so they run one at a time.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Mutex, MutexGuard},
    thread,
    time::Duration,
};

use lb_tests::lab::{wait_for, Lab, Layout, Reply, VIP};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn config(vips: &str, extra: &str) -> String {
    format!("vips:\n{vips}\n{extra}")
}

/// A VIP block on 198.18.0.100:`port`.
fn vip(port: u16, proto: &str, sched: &str, persist: &str, mask: u8, backends: &[(u8, u32)]) -> String {
    let mut s = format!(
        "  - address: {VIP}\n    port: {port}\n    protocol: {proto}\n    scheduler: {sched}\n    persistence: {{ timeout: {persist}, netmask: {mask} }}\n    backends:\n"
    );
    for (b, w) in backends {
        s.push_str(&format!("      - {{ address: 198.18.1.{}, port: 8080, weight: {w} }}\n", 10 + b));
    }
    s
}

fn backends_of(replies: &[Reply]) -> Vec<String> {
    replies.iter().map(|r| r.backend().unwrap_or("FAILED").to_string()).collect()
}

#[track_caller]
fn all_ok(replies: &[Reply], lab: &Lab) {
    assert!(
        replies.iter().all(|r| matches!(r, Reply::Ok { .. })),
        "failed requests: {replies:?}\ncontroller log:\n{}",
        lab.controller_log()
    );
}

#[test]
fn client_sticks_to_one_backend_and_replies_come_from_the_vip() {
    let _g = serial();
    let mut lab = Lab::up("lbe-stick", Layout::OneArm, 2, 3).unwrap();
    let cfg = config(
        &(vip(80, "tcp", "rr", "300s", 32, &[(1, 1), (2, 1), (3, 1)]) + &vip(8080, "udp", "rr", "300s", 32, &[(1, 1), (2, 1), (3, 1)])),
        "",
    );
    lab.start_balancer(&cfg).unwrap();

    let r1 = lab.http(0, 80, &["--count", "25"]).unwrap();
    all_ok(&r1, &lab);
    let b1: BTreeSet<String> = backends_of(&r1).into_iter().collect();
    assert_eq!(b1.len(), 1, "client 1 must stick to one backend over 25 connections: {r1:?}");
    for r in &r1 {
        let Reply::Ok { seen, from, .. } = r else { unreachable!() };
        assert_eq!(seen.unwrap().ip(), lab.clients[0].addr, "the backend sees the client's real address");
        assert_eq!(from.unwrap(), format!("{VIP}:80").parse().unwrap(), "the client talks to the VIP");
    }
    // A second client is balanced too, and sticks as well.
    let r2 = lab.http(1, 80, &["--count", "20"]).unwrap();
    all_ok(&r2, &lab);
    assert_eq!(backends_of(&r2).into_iter().collect::<BTreeSet<_>>().len(), 1, "{r2:?}");

    // UDP: replies carry the VIP as their source, and stick too.
    let u = lab.udp(0, 8080, &["--count", "10"]).unwrap();
    all_ok(&u, &lab);
    for r in &u {
        let Reply::Ok { from, seen, .. } = r else { unreachable!() };
        assert_eq!(from.unwrap(), format!("{VIP}:8080").parse().unwrap(), "UDP reply source must be the VIP: {u:?}");
        assert_eq!(seen.unwrap().ip(), lab.clients[0].addr);
    }
    assert_eq!(backends_of(&u).into_iter().collect::<BTreeSet<_>>().len(), 1);

    let sessions = lab.ctl(&["sessions"]).unwrap();
    assert!(sessions.contains("198.18.0.11/32"), "{sessions}");
    assert!(sessions.contains("198.18.0.12/32"), "{sessions}");
    let conns = lab.ctl(&["conns"]).unwrap();
    assert!(conns.contains("198.18.0.11:"), "{conns}");
    let stats = lab.ctl(&["stats"]).unwrap();
    assert!(stats.contains("lb_vip_connections_total{vip=\"198.18.0.100:80\",protocol=\"tcp\",name=\"\"} 45"), "{stats}");
    assert!(lab.stop_balancer().unwrap().success(), "{}", lab.controller_log());
}
