//! `mode: http` behind TLS end to end: certificates made by a test CA,
//! curl (HTTP/1.1 and HTTP/2), OpenSSL's client and a real WebSocket
//! client against the PHP application and a WebSocket echo server on the
//! backends. The tests run one at a time.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
};

use lb_tests::{
    apps::{page, Apps, Page, APP_PORT},
    lab::{serial, Lab, Layout, VIP},
    pki::{ServerCert, TestCa},
};

const WS_PORT: u16 = 8090;

/// A `tls:` VIP on 443 (the PHP application, cookie persistence) and one
/// on 8443 (the WebSocket echo server), with `certs`.
fn config(lab: &Lab, certs: &[&ServerCert], tls_extra: &str) -> String {
    let certificates: String = certs
        .iter()
        .map(|c| {
            format!(
                "          - {{ cert: {}, key: {} }}\n",
                c.cert.display(),
                c.key.display()
            )
        })
        .collect();
    let vip = |port: u16, backend_port: u16| {
        let backends: String = (1..=lab.backends.len())
            .map(|b| format!("      - {{ address: 198.18.1.1{b}, port: {backend_port} }}\n"))
            .collect();
        format!(
            "  - name: shop{port}\n    address: {VIP}\n    port: {port}\n    mode: http\n    scheduler: rr\n    persistence:\n      cookie: {{ name: SRVID }}\n    tls:\n      certificates:\n{certificates}{tls_extra}    backends:\n{backends}"
        )
    };
    format!(
        "vips:\n{}{}http:\n  cookie_key_file: {}\n",
        vip(443, APP_PORT),
        vip(8443, WS_PORT),
        lab.workdir.join("cookie.key").display()
    )
}

/// curl on the client host, trusting the test CA, `shop.test` and
/// `mail.test` resolved to the VIP.
fn curl(lab: &Lab, ca: &TestCa) -> Command {
    let mut c = lab.curl(0);
    c.arg("--cacert")
        .arg(&ca.cert)
        .args(["--resolve", &format!("shop.test:443:{VIP}")])
        .args(["--resolve", &format!("mail.test:443:{VIP}")]);
    c
}

/// One request as `user` with the user's cookie jar: the page and the
/// response head (lower case).
fn visit(lab: &Lab, ca: &TestCa, user: &str, version: &str) -> (Option<Page>, String) {
    let jar = lab.workdir.join(format!("jar-{user}"));
    let out = curl(lab, ca)
        .args(["-i", version])
        .arg("-b")
        .arg(&jar)
        .arg("-c")
        .arg(&jar)
        .arg(format!("https://shop.test/session.php?login={user}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    (page(body.trim()), head.to_ascii_lowercase())
}

/// A cookie's value in `user`'s jar.
fn in_jar(lab: &Lab, user: &str, name: &str) -> String {
    let jar = std::fs::read_to_string(lab.workdir.join(format!("jar-{user}"))).unwrap();
    jar.lines()
        .find(|l| l.split('\t').nth(5) == Some(name))
        .and_then(|l| l.split('\t').nth(6).map(String::from))
        .unwrap_or_else(|| panic!("no {name} in {user}'s jar:\n{jar}"))
}

/// OpenSSL's client on the client host, to `shop.test` on the VIP's 443,
/// with nothing to send.
fn s_client(lab: &Lab) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &lab.clients[0].ns, "openssl", "s_client"])
        .args([
            "-connect",
            &format!("{VIP}:443"),
            "-servername",
            "shop.test",
        ])
        .stdin(Stdio::null());
    c
}

/// The subject of the certificate the VIP serves for `name` (none: no
/// SNI, by address).
fn subject(lab: &Lab, ca: &TestCa, name: Option<&str>) -> String {
    let url = name.map_or_else(
        || format!("https://{VIP}/hello.txt"),
        |n| format!("https://{n}/hello.txt"),
    );
    let out = curl(lab, ca)
        .args(["-v", "-o", "/dev/null", "-k"])
        .arg(url)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| l.trim_start_matches(['*', ' ']).strip_prefix("subject: "))
        .unwrap_or_else(|| panic!("no certificate subject in:\n{err}"))
        .to_string()
}

/// Three users behind one address, each with its own cookie jar, keep
/// their backends over HTTPS (HTTP/1.1, then HTTP/2) and spread over
/// them; the cookie is `Secure`, the backends see `X-Forwarded-Proto:
/// https`; two requests with two users' cookies on ONE HTTP/2 connection
/// go to their two backends, the cookies split over several fields.
#[test]
fn users_keep_their_backends_over_https_and_http2() {
    let _g = serial();
    let mut lab = Lab::up("lbs-users", Layout::Plain, 1, 3).unwrap();
    let ca = TestCa::new(&lab.workdir.join("pki")).unwrap();
    let shop = ca.issue("shop", &["shop.test"], "first").unwrap();
    let _apps = Apps::start(&lab);
    lab.start_balancer(&config(&lab, &[&shop], "")).unwrap();
    let users = ["alice", "bob", "carol"];
    let mut servers = std::collections::BTreeMap::new();
    for round in 1..=4 {
        for user in users {
            let (p, head) = visit(&lab, &ca, user, "--http1.1");
            let p = p.unwrap_or_else(|| panic!("{user}: {head}\n{}", lab.controller_log()));
            assert!(head.starts_with("http/1.1 200"), "{head}");
            if round == 1 {
                assert!(
                    head.contains("set-cookie: srvid=") && head.contains("; secure"),
                    "a Secure cookie over TLS: {head}"
                );
            } else {
                assert!(!head.contains("set-cookie: srvid="), "{head}");
            }
            let server = servers.entry(user).or_insert_with(|| p.server.clone());
            assert_eq!(&p.server, server, "{user} stays on its server");
            assert_eq!(
                (p.user.as_str(), p.n),
                (user, round),
                "{user}'s session is kept"
            );
            assert_eq!(p.proto, "https");
            assert_eq!(p.xff, "198.18.0.11");
            assert_eq!(p.lb_cookie, "none", "the backend never sees our cookie");
        }
    }
    let distinct: std::collections::BTreeSet<_> = servers.values().collect();
    assert_eq!(distinct.len(), 3, "spread over the backends: {servers:?}");
    for round in 5..=6 {
        for user in users {
            let (p, head) = visit(&lab, &ca, user, "--http2");
            assert!(head.starts_with("http/2 200"), "{head}");
            let p = p.unwrap();
            assert_eq!(
                (&p.server, p.n),
                (&servers[user], round),
                "{user} over HTTP/2"
            );
        }
    }
    // One HTTP/2 connection, two requests: alice's cookies, then bob's,
    // each in fields of their own.
    let request = |user: &str| {
        vec![
            "--http2".to_string(),
            "-H".into(),
            "cookie: theme=dark".into(),
            "-H".into(),
            format!("cookie: PHPSESSID={}", in_jar(&lab, user, "PHPSESSID")),
            "-H".into(),
            format!("cookie: SRVID={}", in_jar(&lab, user, "SRVID")),
            "-w".into(),
            "connects=%{num_connects} version=%{http_version}\n".into(),
            format!("https://shop.test/session.php?login={user}"),
        ]
    };
    let out = curl(&lab, &ca)
        .args(request("alice"))
        .arg("--next")
        .arg("--cacert")
        .arg(&ca.cert)
        .args(["--resolve", &format!("shop.test:443:{VIP}")])
        .args(request("bob"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let pages: Vec<Page> = text.lines().filter_map(page).collect();
    assert_eq!(pages.len(), 2, "{text}");
    assert_eq!(
        (pages[0].user.as_str(), &pages[0].server, pages[0].n),
        ("alice", &servers["alice"], 7),
        "{text}"
    );
    assert_eq!(
        (pages[1].user.as_str(), &pages[1].server, pages[1].n),
        ("bob", &servers["bob"], 7),
        "{text}"
    );
    assert!(
        text.contains("connects=1 version=2") && text.contains("connects=0 version=2"),
        "both requests on one HTTP/2 connection: {text}"
    );
    let label = format!("vip=\"{VIP}:443\",protocol=\"tcp\"");
    let h2 = lab
        .metric(&format!("lb_tls_alpn_total{{{label},alpn=\"h2\"}}"))
        .unwrap();
    let h1 = lab
        .metric(&format!("lb_tls_alpn_total{{{label},alpn=\"http/1.1\"}}"))
        .unwrap();
    assert_eq!((h1, h2), (12.0, 7.0), "one handshake per curl run");
    assert_eq!(
        lab.metric(&format!("lb_http_cookie_hits_total{{{label}}}"))
            .unwrap(),
        9.0 + 6.0 + 2.0
    );
}

/// SNI picks the right certificate (the first without SNI); a WebSocket
/// over `wss://` echoes; a certificate replaced and reloaded is served to
/// new connections while the open WebSocket goes on; a bad file refuses
/// the reload and the old certificate stays; a TLS 1.0 client is refused.
#[test]
fn sni_wss_reload_and_old_clients() {
    let _g = serial();
    let mut lab = Lab::up("lbs-sni", Layout::Plain, 1, 3).unwrap();
    let ca = TestCa::new(&lab.workdir.join("pki")).unwrap();
    let shop = ca.issue("shop", &["shop.test"], "first").unwrap();
    let mail = ca.issue("mail", &["mail.test"], "first").unwrap();
    let _apps = Apps::start(&lab);
    let node = lb_tests::lab::bin_dir().join("lb-lab-node");
    let _echo: Vec<_> = lab
        .backends
        .iter()
        .map(|b| {
            lb_tests::lab::KillOnDrop(
                Command::new("ip")
                    .args(["netns", "exec", &b.ns])
                    .arg(&node)
                    .args(["ws-echo", "--name", &b.name, "--port", &WS_PORT.to_string()])
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    lab.start_balancer(&config(&lab, &[&shop, &mail], ""))
        .unwrap();
    assert!(subject(&lab, &ca, Some("shop.test")).contains("CN=shop.test"));
    assert!(subject(&lab, &ca, Some("mail.test")).contains("CN=mail.test"));
    assert!(
        subject(&lab, &ca, None).contains("CN=shop.test"),
        "the first without SNI"
    );

    // A WebSocket through TLS, kept open across the reload.
    let mut ws = Command::new("ip")
        .args(["netns", "exec", &lab.clients[0].ns])
        .arg(&node)
        .args([
            "ws",
            "wss://shop.test:8443/chat",
            "--connect",
            &format!("{VIP}:8443"),
        ])
        .arg("--ca-file")
        .arg(&ca.cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_ws = ws.stdin.take().unwrap();
    let mut from_ws = BufReader::new(ws.stdout.take().unwrap());
    let mut say = |text: &str| {
        writeln!(to_ws, "{text}").unwrap();
        let mut line = String::new();
        from_ws.read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    let first = say("hello");
    let (server, echoed) = first
        .strip_prefix("ok ")
        .and_then(|l| l.split_once(": "))
        .unwrap_or_else(|| panic!("{first}\n{}", lab.controller_log()));
    assert_eq!(echoed, "hello");
    let server = server.to_string();

    // Replace the certificate (same files) and reload.
    assert!(subject(&lab, &ca, Some("shop.test")).contains("O=first"));
    ca.issue("shop", &["shop.test"], "second").unwrap();
    let reloaded = lab.ctl(&["reload"]).unwrap();
    assert!(reloaded.contains("reloaded"), "{reloaded}");
    assert!(
        subject(&lab, &ca, Some("shop.test")).contains("O=second"),
        "new connections get the new certificate"
    );
    assert_eq!(
        say("again"),
        format!("ok {server}: again"),
        "the open connection goes on"
    );

    // A broken file refuses the whole reload; the served certificate stays.
    std::fs::write(&shop.cert, "not a certificate\n").unwrap();
    let refused = lab.ctl(&["reload"]).unwrap_err().to_string();
    assert!(
        refused.contains("tls.certificates[0].cert") && refused.contains("shop.pem"),
        "{refused}"
    );
    assert!(subject(&lab, &ca, Some("shop.test")).contains("O=second"));
    assert_eq!(say("still"), format!("ok {server}: still"));
    // Changes through the API (and health verdicts) keep the loaded
    // certificates: they read no file, so the broken one stops nothing.
    let drained = lab
        .ctl(&[
            "backend",
            "drain",
            &format!("{VIP}:443"),
            "198.18.1.13:8081",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(drained.contains("198.18.1.13:8081"), "{drained}");
    lab.ctl(&[
        "backend",
        "enable",
        &format!("{VIP}:443"),
        "198.18.1.13:8081",
    ])
    .unwrap();
    assert!(subject(&lab, &ca, Some("shop.test")).contains("O=second"));
    drop(to_ws);
    let _ = ws.wait();

    // A TLS 1.2 session is resumed, and counted.
    let label = format!("vip=\"{VIP}:443\",protocol=\"tcp\"");
    let session = lab.workdir.join("tls12.session");
    let session_run = |keep: &str| {
        let out = s_client(&lab)
            .arg("-tls1_2")
            .arg("-CAfile")
            .arg(&ca.cert)
            .arg(keep)
            .arg(&session)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let first = session_run("-sess_out");
    assert!(
        first.contains("New, TLSv1.2") && first.contains("Verify return code: 0 (ok)"),
        "{first}"
    );
    let again = session_run("-sess_in");
    assert!(again.contains("Reused, TLSv1.2"), "{again}");
    assert!(
        lab.metric(&format!("lb_tls_resumed_total{{{label}}}"))
            .unwrap()
            >= 1.0
    );

    // TLS 1.0 is refused by the balancer (its counter says so), 1.2 taken.
    let failed = |lab: &Lab| {
        lab.metric(&format!(
            "lb_tls_handshakes_total{{{label},result=\"failed\"}}"
        ))
        .unwrap()
    };
    let before = failed(&lab);
    let old = s_client(&lab)
        .args(["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&old.stdout).to_string() + &String::from_utf8_lossy(&old.stderr);
    assert!(!old.status.success(), "{said}");
    assert!(
        said.contains("alert handshake failure") || said.contains("alert protocol version"),
        "the balancer refuses it with an alert: {said}"
    );
    assert_eq!(failed(&lab), before + 1.0);
    let tls12 = curl(&lab, &ca)
        .args([
            "--tlsv1.2",
            "--tls-max",
            "1.2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("https://shop.test/hello.txt")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&tls12.stdout), "200");
    assert!(
        lab.metric(&format!("lb_tls_version_total{{{label},version=\"1.2\"}}"))
            .unwrap()
            >= 1.0
    );
    let expiry = lab
        .metric(&format!(
            "lb_tls_certificate_expiry_seconds{{{label},certificate=\"{}\"}}",
            mail.cert.display()
        ))
        .unwrap();
    assert!(expiry > 300.0 * 86_400.0, "{expiry}");
    let status = lab.ctl(&["status"]).unwrap();
    assert!(
        status.contains("certificates:")
            && status.contains(&format!("{}  expires", mail.cert.display())),
        "{status}"
    );
    let vips = lab.ctl(&["vip", "list"]).unwrap();
    assert!(
        vips.lines().any(|l| l.contains(&format!("{VIP}:443"))
            && l.contains(" https ")
            && l.contains("cookie:SRVID")),
        "{vips}"
    );
}
