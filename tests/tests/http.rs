//! `mode: http` end to end: the layer-7 proxy with cookie persistence in
//! front of a real web application that keeps per-user sessions on its own
//! server (PHP, file sessions per backend), driven by curl with cookie jars.
//! The tests run one at a time.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use lb_tests::{
    apps::{page, Apps, Page, APP_PORT},
    lab::{serial, wait_for, Lab, Layout, VIP, VIP6},
};

fn config(lab: &Lab, backends: &[u8]) -> String {
    let mut s = format!(
        "vips:\n  - name: shop\n    address: {VIP}\n    port: 80\n    mode: http\n    scheduler: rr\n    persistence:\n      cookie: {{ name: SRVID, max_idle: 30m, path: /, http_only: true, same_site: lax }}\n    backends:\n"
    );
    for b in backends {
        s.push_str(&format!(
            "      - {{ address: 198.18.1.{}, port: {APP_PORT} }}\n",
            10 + b
        ));
    }
    s + &format!(
        "http:\n  cookie_key_file: {}\n",
        lab.workdir.join("cookie.key").display()
    )
}

/// A request from the client host as `user`, with the user's cookie jar
/// (a new connection each time). Returns the page and the response head.
/// curl on the client host, quiet, bounded to 5 s.
fn curl(lab: &Lab) -> Command {
    lab.curl(0)
}

fn visit(lab: &Lab, user: &str, extra: &[&str]) -> (Option<Page>, String) {
    let jar = lab.workdir.join(format!("jar-{user}"));
    let out = curl(lab)
        .arg("-i")
        .arg("-b")
        .arg(&jar)
        .arg("-c")
        .arg(&jar)
        .args(extra)
        .arg(format!("http://{VIP}/session.php?login={user}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    (page(body.trim()), head.to_ascii_lowercase())
}

fn cookie_in_jar(lab: &Lab, user: &str) -> Option<String> {
    let jar = std::fs::read_to_string(lab.workdir.join(format!("jar-{user}"))).ok()?;
    jar.lines()
        .find(|l| l.split('\t').nth(5) == Some("SRVID"))
        .and_then(|l| l.split('\t').nth(6).map(String::from))
}

/// Users behind ONE client address each keep their session on their own
/// server for 20 requests (a new connection each), spread over the
/// backends; the backends never see our cookie, their own cookies pass, and
/// they see the client in X-Forwarded-For.
#[test]
fn users_behind_one_address_keep_their_sessions() {
    let _g = serial();
    let mut lab = Lab::up("lbw-users", Layout::Plain, 1, 3).unwrap();
    let _apps = Apps::start(&lab);
    lab.start_balancer(&config(&lab, &[1, 2, 3])).unwrap();
    let (first, head) = visit(&lab, "alice", &[]);
    let first = first.unwrap_or_else(|| panic!("{head}\n{}", lab.controller_log()));
    assert_eq!(first.n, 1);
    assert!(
        head.contains("set-cookie: srvid=")
            && head.contains("; path=/; max-age=1800; httponly; samesite=lax"),
        "{head}"
    );
    assert!(
        head.contains("cache-control: no-store"),
        "the backend's own caching rules are kept: {head}"
    );
    assert!(
        head.contains("set-cookie: phpsessid="),
        "the backend's own cookie passes: {head}"
    );
    // A page without caching rules of its own, for a new user: private.
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.clients[0].ns, "curl", "-s", "-i"])
        .arg(format!("http://{VIP}/hello.txt"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        text.contains("set-cookie: srvid=") && text.contains("cache-control: private"),
        "{text}"
    );
    let mut servers = std::collections::BTreeMap::new();
    servers.insert("alice".to_string(), first.server.clone());
    for user in ["bob", "carol"] {
        let (p, _) = visit(&lab, user, &[]);
        servers.insert(user.to_string(), p.unwrap().server);
    }
    let distinct: std::collections::BTreeSet<_> = servers.values().collect();
    assert!(distinct.len() >= 2, "spread over the backends: {servers:?}");
    for round in 2..=20 {
        for (user, server) in &servers {
            let (p, head) = visit(&lab, user, &[]);
            let p = p.unwrap_or_else(|| panic!("{user} round {round}: {head}"));
            assert_eq!(&p.server, server, "{user} stays on its server");
            assert_eq!(p.user, *user);
            assert_eq!(p.n, round, "{user}'s session is kept");
            assert_eq!(p.lb_cookie, "none", "the backend never sees our cookie");
            assert_eq!(p.xff, "198.18.0.11");
            assert!(
                !head.contains("set-cookie: srvid="),
                "no new cookie while valid: {head}"
            );
        }
    }
    let stats = lab.ctl(&["stats"]).unwrap();
    assert!(
        stats.contains(&format!(
            "lb_http_cookie_hits_total{{vip=\"{VIP}:80\",protocol=\"tcp\"}} 57"
        )),
        "{stats}"
    );
}

/// A tampered cookie and a removed backend each lead to a fresh backend
/// with no error; two users' requests interleaved on one keep-alive
/// connection reach their own backends; a backend that refuses
/// connections is redispatched from.
#[test]
fn bad_cookies_removed_backends_shared_connections_and_redispatch() {
    let _g = serial();
    let mut lab = Lab::up("lbw-edge", Layout::Plain, 1, 3).unwrap();
    let mut apps = Apps::start(&lab);
    lab.start_balancer(&config(&lab, &[1, 2, 3])).unwrap();
    let (a, _) = visit(&lab, "alice", &[]);
    let (b, _) = visit(&lab, "bob", &[]);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.server, b.server);
    // Both users on one connection, interleaved: curl reuses it.
    let ca = cookie_in_jar(&lab, "alice").unwrap();
    let cb = cookie_in_jar(&lab, "bob").unwrap();
    let url = format!("http://{VIP}/session.php");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.clients[0].ns, "curl", "-s", "-v"])
        .args(["-H", &format!("Cookie: SRVID={ca}"), &url])
        .args(["--next", "-H", &format!("Cookie: SRVID={cb}"), &url])
        .args(["--next", "-H", &format!("Cookie: SRVID={ca}"), &url])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    let servers: Vec<String> = body.lines().filter_map(page).map(|p| p.server).collect();
    assert_eq!(
        servers,
        vec![a.server.clone(), b.server.clone(), a.server.clone()]
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Re-using existing connection"),
        "one connection"
    );
    // A tampered cookie: balanced afresh, a new cookie, no error.
    let jar = lab.workdir.join("jar-alice");
    let text = std::fs::read_to_string(&jar).unwrap();
    let flipped: String = ca
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 5 {
                if c == 'A' {
                    'B'
                } else {
                    'A'
                }
            } else {
                c
            }
        })
        .collect();
    std::fs::write(&jar, text.replace(&ca, &flipped)).unwrap();
    let (p, head) = visit(&lab, "alice", &[]);
    assert!(p.is_some(), "{head}");
    assert!(head.contains("set-cookie: srvid="), "a new cookie: {head}");
    assert_eq!(
        lab.metric(&format!(
            "lb_http_cookie_invalid_total{{vip=\"{VIP}:80\",protocol=\"tcp\"}}"
        ))
        .unwrap(),
        1.0,
        "the tampered cookie is counted once"
    );
    // A removed backend: its user moves, no error.
    let (p, _) = visit(&lab, "bob", &[]);
    let bob_server = p.unwrap().server;
    let idx = lab
        .backends
        .iter()
        .position(|h| h.name == bob_server)
        .unwrap();
    let addr = lab.backends[idx].addr;
    lab.ctl(&[
        "backend",
        "remove",
        &format!("{VIP}:80"),
        &format!("{addr}:{APP_PORT}"),
    ])
    .unwrap();
    let (p, head) = visit(&lab, "bob", &[]);
    let p = p.unwrap_or_else(|| panic!("{head}"));
    assert_ne!(p.server, bob_server);
    assert!(head.contains("set-cookie: srvid="));
    // Redispatch: the server of carol's backend dies; her next request is
    // retried on another backend, which issues her new cookie.
    let (p, _) = visit(&lab, "carol", &[]);
    let carol_server = p.unwrap().server;
    let idx = lab
        .backends
        .iter()
        .position(|h| h.name == carol_server)
        .unwrap();
    apps.kill(idx);
    let (p, head) = visit(&lab, "carol", &[]);
    let p = p.unwrap_or_else(|| panic!("redispatched: {head}\n{}", lab.controller_log()));
    assert_ne!(p.server, carol_server);
    assert!(head.contains("set-cookie: srvid="), "{head}");
    assert!(lab.controller_log().contains("redispatched"));
    // A malformed request: 400 from the proxy, counted.
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.clients[0].ns, "bash", "-c"])
        .arg(format!(
            "exec 3<>/dev/tcp/{VIP}/80; printf 'NOT HTTP AT ALL\\r\\n\\r\\n' >&3; head -c 12 <&3"
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HTTP/1.1 400",
        "{out:?}"
    );
    wait_for(Duration::from_secs(2), || {
        lab.ctl(&["stats"]).is_ok_and(|s| {
            s.contains(&format!(
                "lb_http_bad_requests_total{{vip=\"{VIP}:80\",protocol=\"tcp\"}} 1"
            ))
        })
    })
    .unwrap();
}

/// What is refused: a port taken by another process; bad cookie settings.
#[test]
fn bad_http_configs_are_refused() {
    let _g = serial();
    let mut lab = Lab::up("lbw-bad", Layout::Plain, 1, 1).unwrap();
    let node = lb_tests::lab::bin_dir().join("lb-lab-node");
    let mut squatter = Command::new("ip")
        .args(["netns", "exec", &lab.balancer.ns])
        .arg(&node)
        .args(["serve", "--name", "squatter", "--port", "80"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(5), || {
        lb_tests::netns::in_ns(&lab.balancer.ns, &["ss", "-ltn", "sport = :80"])
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("LISTEN"))
    })
    .unwrap();
    let err = lab.start_balancer(&config(&lab, &[1])).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!("cannot listen on {VIP}:80")) && msg.contains("in use"),
        "{msg}"
    );
    let _ = squatter.kill();
    let _ = squatter.wait();
    for (bad, want) in [
        (
            config(&lab, &[1]).replace("name: SRVID, ", ""),
            "missing field `name`",
        ),
        (
            config(&lab, &[1]).replace("same_site: lax", "same_site: none"),
            "same_site: none requires secure: true",
        ),
        (
            config(&lab, &[1]).replace("    mode: http\n", ""),
            "persistence.cookie needs mode: http",
        ),
        (
            config(&lab, &[1]).replace(
                &lab.workdir.join("cookie.key").display().to_string(),
                "/proc/version",
            ),
            "http.cookie_key_file /proc/version: key 1 is not 64 hex digits",
        ),
    ] {
        let err = lab.start_balancer(&bad).unwrap_err();
        assert!(format!("{err:#}").contains(want), "{want}: {err:#}");
    }
}

/// A protocol switch (as a WebSocket upgrade) is routed by the cookie and
/// then carries data both ways; a cookie idle past `max_idle` is not
/// honoured any more (a new one is issued, no error).
#[test]
fn upgrades_follow_the_cookie_and_idle_cookies_expire() {
    let _g = serial();
    let mut lab = Lab::up("lbw-ws", Layout::Plain, 1, 3).unwrap();
    let cfg = format!(
        "vips:\n  - address: {VIP}\n    port: 81\n    mode: http\n    persistence:\n      cookie: {{ name: SRVID, max_idle: 2s }}\n    backends:\n{}http:\n  cookie_key_file: {}\n",
        (1..=3)
            .map(|b| format!("      - {{ address: 198.18.1.1{b}, port: 8080 }}\n"))
            .collect::<String>(),
        lab.workdir.join("cookie.key").display()
    );
    lab.start_balancer(&cfg).unwrap();
    let jar = lab.workdir.join("jar-ws");
    let get = |lab: &Lab| {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.clients[0].ns, "curl", "-s", "-i"])
            .arg("-b")
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .arg(format!("http://{VIP}:81/"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    // Move the scheduler on once, so the pinned backend is not the first.
    let _ = Command::new("ip")
        .args(["netns", "exec", &lab.clients[0].ns, "curl", "-s"])
        .arg(format!("http://{VIP}:81/"))
        .output()
        .unwrap();
    let first = get(&lab);
    let server = first
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(first.contains("set-cookie: srvid="), "{first}");
    let cookie = cookie_in_jar_at(&jar).unwrap();
    let node = lb_tests::lab::bin_dir().join("lb-lab-node");
    for i in 0..3 {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.clients[0].ns])
            .arg(&node)
            .args(["upgrade", &format!("{VIP}:81")])
            .args(["--cookie", &format!("SRVID={cookie}")])
            .args(["--message", &format!("hi{i}")])
            .output()
            .unwrap();
        let reply = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            reply,
            format!("ok {server}: hi{i}"),
            "{}",
            lab.controller_log()
        );
    }
    // Idle past max_idle (2 s): not honoured; a new cookie, no error. The
    // cookie is sent as it was (a browser would drop it after its
    // Max-Age; the balancer must not rely on that).
    std::thread::sleep(Duration::from_millis(2500));
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.clients[0].ns, "curl", "-s", "-i"])
        .args(["-H", &format!("Cookie: SRVID={cookie}")])
        .arg(format!("http://{VIP}:81/"))
        .output()
        .unwrap();
    let again = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(again.starts_with("http/1.1 200"), "{again}");
    assert!(
        again.contains("set-cookie: srvid="),
        "a new cookie: {again}"
    );
    let stats = lab.ctl(&["stats"]).unwrap();
    assert!(
        stats.contains(&format!(
            "lb_http_cookie_invalid_total{{vip=\"{VIP}:81\",protocol=\"tcp\"}} 1"
        )),
        "{stats}"
    );
}

fn cookie_in_jar_at(jar: &Path) -> Option<String> {
    let text = std::fs::read_to_string(jar).ok()?;
    text.lines()
        .find(|l| l.split('\t').nth(5) == Some("SRVID"))
        .and_then(|l| l.split('\t').nth(6).map(String::from))
}

/// The status and body of a POST with a body, as a new user (no cookie).
fn post(lab: &Lab, port: u16) -> (u16, String) {
    let out = curl(lab)
        .args(["-o", "-", "-w", "\n%{http_code}"])
        .args(["-d", "item=book&qty=2"])
        .arg(format!("http://{VIP}:{port}/session.php?login=poster"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A cookie naming a backend that is down, or drained with `--repin`, is
/// treated as absent: its user is balanced afresh, with a new cookie, and
/// the down backend is not even tried. A plain drain keeps its users. A
/// request with a body whose backend refuses the connection gets a 502 and
/// is not retried elsewhere (the body may have been half sent).
#[test]
fn cookies_of_down_and_drained_backends_and_a_refused_body() {
    let _g = serial();
    let mut lab = Lab::up("lbw-state", Layout::Plain, 1, 3).unwrap();
    let mut apps = Apps::start(&lab);
    let checked = config(&lab, &[1, 2, 3]).replace(
        "    backends:\n",
        "    health_check: { kind: tcp, interval: 500ms, timeout: 500ms, rise: 2, fall: 2 }\n    backends:\n",
    );
    // A second VIP: b1 on a port nobody listens on, b2's application.
    let refusing = format!(
        "  - name: refusing\n    address: {VIP}\n    port: 81\n    mode: http\n    persistence:\n      cookie: {{ name: SRVID }}\n    backends:\n      - {{ address: 198.18.1.11, port: 9999 }}\n      - {{ address: 198.18.1.12, port: {APP_PORT} }}\n"
    );
    let cfg = checked.replacen("http:\n", &format!("{refusing}http:\n"), 1);
    lab.start_balancer(&cfg).unwrap();
    let mut server = std::collections::BTreeMap::new();
    for user in ["alice", "bob", "carol"] {
        let (p, head) = visit(&lab, user, &[]);
        server.insert(user, p.unwrap_or_else(|| panic!("{head}")).server);
    }
    let distinct: std::collections::BTreeSet<_> = server.values().collect();
    assert_eq!(distinct.len(), 3, "one user per server: {server:?}");
    let addr = |name: &str| {
        let b = lab.backends.iter().find(|b| b.name == name).unwrap();
        format!("{}:{APP_PORT}", b.addr)
    };
    let vip = format!("{VIP}:80");
    let metric = |what: &str| {
        lab.metric(&format!(
            "lb_http_{what}_total{{vip=\"{VIP}:80\",protocol=\"tcp\"}}"
        ))
        .unwrap()
    };

    // A plain drain: alice stays, with her session; new users go elsewhere.
    lab.ctl(&["backend", "drain", &vip, &addr(&server["alice"])])
        .unwrap();
    let (p, head) = visit(&lab, "alice", &[]);
    let p = p.unwrap();
    assert_eq!((p.server.as_str(), p.n), (server["alice"].as_str(), 2));
    assert!(!head.contains("set-cookie: srvid="), "{head}");
    let (p, _) = visit(&lab, "dave", &[]);
    assert_ne!(p.unwrap().server, server["alice"], "no new user");

    // Drained with --repin: bob is balanced afresh, with a new cookie.
    let invalid = metric("cookie_invalid");
    lab.ctl(&["backend", "drain", "--repin", &vip, &addr(&server["bob"])])
        .unwrap();
    let (p, head) = visit(&lab, "bob", &[]);
    let p = p.unwrap();
    assert_ne!(p.server, server["bob"]);
    assert_eq!(p.n, 1, "a new session on the new server");
    assert!(head.contains("set-cookie: srvid="), "{head}");
    assert_eq!(metric("cookie_invalid"), invalid + 1.0);

    // alice's server enabled again: it takes new users.
    lab.ctl(&["backend", "enable", &vip, &addr(&server["alice"])])
        .unwrap();
    // carol's server down by its checks: balanced afresh without trying it
    // (bob's server, drained, takes no new user: she goes to alice's).
    let carol = lab
        .backends
        .iter()
        .position(|b| b.name == server["carol"])
        .unwrap();
    apps.kill(carol);
    let down = format!("backend {} is down", addr(&server["carol"]));
    wait_for(Duration::from_secs(10), || {
        lab.controller_log().contains(&down)
    })
    .unwrap_or_else(|_| panic!("{}", lab.controller_log()));
    let redispatches = metric("redispatches");
    let (p, head) = visit(&lab, "carol", &[]);
    let p = p.unwrap_or_else(|| panic!("{head}"));
    assert_eq!(p.server, server["alice"]);
    assert!(head.contains("set-cookie: srvid="), "{head}");
    assert_eq!(metric("cookie_invalid"), invalid + 2.0);
    assert_eq!(
        metric("redispatches"),
        redispatches,
        "the down backend is not tried"
    );

    // Bodies are not retried: of two new users' POSTs, the one sent to the
    // refusing backend fails, the other succeeds.
    let mut codes: Vec<u16> = (0..2).map(|_| post(&lab, 81).0).collect();
    codes.sort_unstable();
    assert_eq!(codes, [200, 502], "{}", lab.controller_log());
    let on81 = |what: &str| {
        lab.metric(&format!(
            "lb_http_{what}_total{{vip=\"{VIP}:81\",protocol=\"tcp\"}}"
        ))
        .unwrap()
    };
    assert_eq!(on81("redispatches"), 0.0);
    assert_eq!(on81("upstream_errors"), 1.0);
}

/// A `Cookie` header with bytes that are not ASCII reaches the backend as
/// it was sent, our cookie alone taken out.
#[test]
fn non_ascii_cookies_reach_the_backend_intact() {
    use std::os::unix::ffi::OsStrExt as _;
    let _g = serial();
    let mut lab = Lab::up("lbw-bytes", Layout::Plain, 1, 2).unwrap();
    let _apps = Apps::start(&lab);
    lab.start_balancer(&config(&lab, &[1, 2])).unwrap();
    let (p, head) = visit(&lab, "alice", &[]);
    assert!(p.is_some(), "{head}");
    let ours = cookie_in_jar(&lab, "alice").unwrap();
    let seen = |header: &[u8]| {
        let out = curl(&lab)
            .arg("-H")
            .arg(std::ffi::OsStr::from_bytes(header))
            .arg(format!("http://{VIP}/cookie.php"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.trim()
            .strip_prefix("cookie=")
            .unwrap_or_else(|| panic!("{text}"))
            .to_string()
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut with_ours = b"Cookie: name=Jos\xc3\xa9; SRVID=".to_vec();
    with_ours.extend_from_slice(ours.as_bytes());
    with_ours.extend_from_slice(b"; cart=\xff\xfe");
    assert_eq!(seen(&with_ours), hex(b"name=Jos\xc3\xa9; cart=\xff\xfe"));
    assert_eq!(
        seen(b"Cookie: lang=fran\xc3\xa7ais"),
        hex(b"lang=fran\xc3\xa7ais"),
        "without our cookie: untouched"
    );
}

/// An IPv6 `mode: http` VIP in the dual-stack lab: users behind one IPv6
/// address keep their sessions on their servers (the backends see the
/// client's IPv6 address), the listings name the VIP `[…]:80`, and the
/// health checks over IPv6 take a dead backend out, its user moving to
/// another with no failed request.
#[test]
fn ipv6_users_keep_their_sessions_and_fail_over() {
    let _g = serial();
    let mut lab = Lab::up("lbw-six", Layout::Plain, 1, 3).unwrap();
    let mut apps = Apps::start(&lab);
    let backends: String = lab
        .backends
        .iter()
        .map(|b| {
            format!(
                "      - {{ address: \"{}\", port: {APP_PORT} }}\n",
                b.addr6()
            )
        })
        .collect();
    lab.start_balancer(&format!(
        "vips:\n  - name: shop6\n    address: \"{VIP6}\"\n    port: 80\n    mode: http\n    persistence:\n      cookie: {{ name: SRVID }}\n    health_check: {{ kind: http, path: /hello.txt, interval: 300ms, timeout: 200ms, rise: 1, fall: 2 }}\n    backends:\n{backends}http:\n  cookie_key_file: {}\n",
        lab.workdir.join("cookie.key").display()
    ))
    .unwrap();
    let visit = |user: &str| {
        let jar = lab.workdir.join(format!("jar6-{user}"));
        let out = curl(&lab)
            .args(["-6", "-b"])
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .arg(format!("http://[{VIP6}]/session.php?login={user}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        page(text.trim()).unwrap_or_else(|| panic!("{user}: {text:?}\n{}", lab.controller_log()))
    };
    let mut servers = std::collections::BTreeMap::new();
    for round in 1..=3 {
        for user in ["alice", "bob", "carol"] {
            let p = visit(user);
            let server = servers.entry(user).or_insert_with(|| p.server.clone());
            assert_eq!(
                (&p.server, p.n),
                (&*server, round),
                "{user} keeps its session"
            );
            assert_eq!(p.xff, lab.clients[0].addr6().to_string());
            assert_eq!(p.lb_cookie, "none");
        }
    }
    let distinct: std::collections::BTreeSet<_> = servers.values().collect();
    assert_eq!(distinct.len(), 3, "{servers:?}");
    let listed = lab.ctl(&["backend", "list"]).unwrap();
    assert!(
        listed.contains(&format!("[{VIP6}]:80"))
            && listed.contains(&format!("[{}]:{APP_PORT}", lab.backends[0].addr6())),
        "{listed}"
    );
    // Alice's backend dies: the checks (over IPv6) take it out.
    let idx = lab
        .backends
        .iter()
        .position(|b| b.name == servers["alice"])
        .unwrap();
    apps.kill(idx);
    let down = format!("[{}]:{APP_PORT}", lab.backends[idx].addr6());
    wait_for(Duration::from_secs(10), || {
        lab.ctl(&["backend", "list"]).is_ok_and(|text| {
            text.lines()
                .any(|l| l.contains(&down) && l.split_whitespace().any(|w| w == "down"))
        })
    })
    .unwrap_or_else(|_| panic!("{down} never went down:\n{}", lab.controller_log()));
    let moved = visit("alice");
    assert_ne!(moved.server, servers["alice"]);
    assert_eq!(moved.n, 1, "a new session on the new server");
    let again = visit("alice");
    assert_eq!(
        (&again.server, again.n),
        (&moved.server, 2),
        "and kept there"
    );
    let requests = lab
        .metric(&format!(
            "lb_http_requests_total{{vip=\"[{VIP6}]:80\",protocol=\"tcp\"}}"
        ))
        .unwrap();
    assert_eq!(requests, 11.0);
}
