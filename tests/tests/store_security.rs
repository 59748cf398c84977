//! The cluster's store and its secrets, in the ecmp lab with a real
//! `redis-server`: a password (in the URL, or in `store_password_file`)
//! never shows in the log, `status`, the API or the metrics; a wrong one is
//! logged with Redis's own reason; `rediss://` (TLS, with a test CA)
//! carries the sessions from one host to the other.

use std::{net::Ipv4Addr, process::Command, time::Duration};

use lb_tests::{
    ecmp::{EcmpLab, ANNOUNCE, PORT},
    lab::{serial, wait_for, VIP},
};

const PASSWORD: &str = "s3cret-Pw-42";

/// The ecmp lab's DSR/Maglev VIP with persistence, and `cluster`.
fn config(cluster: &str) -> String {
    let mut c = format!(
        "sweeper: {{ interval: 1s }}\nvips:\n  - address: {VIP}\n    port: {PORT}\n    forwarding: dsr\n    scheduler: maglev\n    persistence: {{ timeout: 300s }}\n    backends:\n"
    );
    for b in 1..=3 {
        c.push_str(&format!(
            "      - {{ address: 198.18.1.1{b}, port: {PORT} }}\n"
        ));
    }
    c + ANNOUNCE + "cluster:\n" + cluster
}

/// Restart both controllers with `config` (taking over their data paths).
fn restart(lab: &mut EcmpLab, config: &str) {
    lab.kill_balancer(0);
    lab.kill_balancer(1);
    lab.start_balancers(config).unwrap();
}

/// Everything an operator can see of balancer `i`.
fn everything_shown(lab: &EcmpLab, i: usize) -> String {
    let mut all = lab.log(i);
    for args in [
        &["status"][..],
        &["status", "-o", "json"],
        &["stats"],
        &["config", "dump"],
    ] {
        all.push_str(&lab.ctl(i, args).unwrap());
    }
    all
}

#[test]
fn store_passwords_are_hidden_and_a_refusal_says_why() {
    let _g = serial();
    let mut lab = EcmpLab::up("lbm-sec", 2).unwrap();
    lab.start_redis_with(&["--requirepass", PASSWORD]).unwrap();
    // The password in a file of its own.
    let file = lab.workdir.join("redis.password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    lab.start_balancers(&config(&format!(
        "  store: \"redis://198.18.1.10:6379\"\n  store_password_file: {}\n",
        file.display()
    )))
    .unwrap();
    for i in 0..2 {
        wait_for(Duration::from_secs(10), || {
            lab.log(i).contains("reachable as node")
        })
        .unwrap_or_else(|_| panic!("host {i} reaches Redis: {}", lab.log(i)));
    }
    assert!(!everything_shown(&lab, 0).contains(PASSWORD));
    // The password in the URL: shown as ***, everywhere.
    restart(
        &mut lab,
        &config(&format!(
            "  store: \"redis://:{PASSWORD}@198.18.1.10:6379\"\n"
        )),
    );
    wait_for(Duration::from_secs(10), || {
        lab.log(0).matches("reachable as node").count() >= 2
    })
    .unwrap_or_else(|_| panic!("{}", lab.log(0)));
    let shown = everything_shown(&lab, 0);
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(shown.contains("redis://:***@198.18.1.10:6379"), "{shown}");
    // A wrong password: Redis's own reason in the log.
    restart(
        &mut lab,
        &config("  store: \"redis://:wrong-one@198.18.1.10:6379\"\n"),
    );
    wait_for(Duration::from_secs(10), || {
        lab.log(0).contains("unreachable")
    })
    .unwrap_or_else(|_| panic!("{}", lab.log(0)));
    let log = lab.log(0);
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("unreachable"))
        .unwrap();
    assert!(
        line.contains("WRONGPASS") || line.contains("invalid username-password pair"),
        "Redis's reason: {line}"
    );
    assert!(!log.contains("wrong-one"), "{log}");
}

/// A client's backend through lb-a, one new connection per request.
fn backend_of(lab: &EcmpLab, client: usize) -> String {
    let r = lab.http(client, 2).unwrap();
    assert!(
        r.len() == 2 && r.iter().all(|x| x.backend() == r[0].backend()),
        "{r:?}"
    );
    r[0].backend().unwrap_or_default().to_string()
}

#[test]
fn sessions_are_shared_over_tls() {
    let _g = serial();
    let mut lab = EcmpLab::up("lbm-tls", 2).unwrap();
    let dir = lab.workdir.clone();
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    // A test CA, and the store's certificate for its address.
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:198.18.1.10\n").unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &path("ca.key"),
        "-out",
        &path("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=lb test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &path("redis.key"),
        "-out",
        &path("redis.csr"),
        "-subj",
        "/CN=198.18.1.10",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("redis.csr"),
        "-CA",
        &path("ca.pem"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-out",
        &path("redis.crt"),
        "-days",
        "2",
        "-extfile",
        &path("san.ext"),
    ]);
    lab.start_redis_with(&[
        "--port",
        "0",
        "--tls-port",
        "6379",
        "--tls-cert-file",
        &path("redis.crt"),
        "--tls-key-file",
        &path("redis.key"),
        "--tls-ca-cert-file",
        &path("ca.pem"),
        "--tls-auth-clients",
        "no",
    ])
    .unwrap();
    lab.start_balancers(&config(&format!(
        "  store: \"rediss://198.18.1.10:6379\"\n  store_ca_file: {}\n",
        path("ca.pem")
    )))
    .unwrap();
    for i in 0..2 {
        wait_for(Duration::from_secs(10), || {
            lab.log(i).contains("reachable as node")
        })
        .unwrap_or_else(|_| panic!("host {i} reaches Redis over TLS: {}", lab.log(i)));
    }
    lab.route_via(&[0]).unwrap();
    let pinned = backend_of(&lab, 0);
    let client: Ipv4Addr = lab.clients[0].1;
    wait_for(Duration::from_secs(10), || {
        lab.ctl(1, &["sessions"])
            .is_ok_and(|s| s.contains(&client.to_string()))
    })
    .unwrap_or_else(|_| panic!("lb-b learns the session over TLS: {}", lab.log(1)));
    lab.route_via(&[1]).unwrap();
    assert_eq!(backend_of(&lab, 0), pinned);
}
