//! The operator's surface end to end: the HTTP API on the control socket
//! through a real HTTP client (curl), `-o json` against the text listings,
//! SIGHUP reloads, and the socket's permissions. The tests run one at a
//! time.

use std::{os::unix::fs::PermissionsExt as _, process::Command, time::Duration};

use lb_tests::{
    lab::{serial, wait_for, Lab, Layout, VIP},
    netns::in_ns,
};
use serde_json::Value;

fn config(name: &str, backends: &[u8], weight: u32) -> String {
    let mut s = format!(
        "vips:\n  - name: {name}\n    address: {VIP}\n    port: 80\n    persistence: {{ timeout: 300s }}\n    backends:\n"
    );
    for b in backends {
        s.push_str(&format!(
            "      - {{ address: 198.18.1.{}, port: 8080, weight: {weight} }}\n",
            10 + b
        ));
    }
    s + "sweeper: { interval: 1s }\n"
}

/// One request with curl over the lab's control socket: (status, headers,
/// body).
fn curl(lab: &Lab, method: &str, path: &str, body: Option<&str>) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-D", "-", "--unix-socket"])
        .arg(&lab.socket)
        .args(["-X", method, &format!("http://lb{path}")]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", b]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "curl {method} {path}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[track_caller]
fn expect(lab: &Lab, method: &str, path: &str, body: Option<&str>, status: u16) -> Value {
    let (got, _, text) = curl(lab, method, path, body);
    assert_eq!(got, status, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[test]
fn the_api_serves_every_resource_with_statuses_by_kind() {
    let _g = serial();
    let mut lab = Lab::up("lbo-api", Layout::Plain, 1, 2).unwrap();
    lab.start_balancer(&config("web", &[1], 1)).unwrap();
    let status = expect(&lab, "GET", "/v1/status", None, 200);
    assert_eq!(status["interfaces"], serde_json::json!(["eth0"]));
    assert_eq!(status["mode"], "generic");
    assert_eq!(status["tables"].as_array().unwrap().len(), 4);
    let vips = expect(&lab, "GET", "/v1/vips", None, 200);
    assert_eq!(vips[0]["spec"]["name"], "web");
    // VIPs: add, duplicate, bad body.
    let spec = format!(
        r#"{{"name":"api","id":{{"endpoint":"{VIP}:81","protocol":"tcp"}},"scheduler":"wrr","persistence_timeout":"0s","persistence_netmask":32}}"#
    );
    expect(&lab, "POST", "/v1/vips", Some(&spec), 201);
    let e = expect(&lab, "POST", "/v1/vips", Some(&spec), 409);
    assert!(
        e["error"].as_str().unwrap().contains("already exists"),
        "{e}"
    );
    let e = expect(&lab, "POST", "/v1/vips", Some(r#"{"name":"x"}"#), 400);
    assert!(
        e["error"].as_str().unwrap().contains("missing field"),
        "{e}"
    );
    // Backends: add, duplicate, bad weight, unknown VIP, bad address.
    let vip81 = format!("/v1/vips/{VIP}:81");
    let b2 = r#"{"backend":"198.18.1.12:8080","weight":2}"#;
    expect(&lab, "POST", &format!("{vip81}/backends"), Some(b2), 201);
    expect(&lab, "POST", &format!("{vip81}/backends"), Some(b2), 409);
    let e = expect(
        &lab,
        "POST",
        &format!("{vip81}/backends"),
        Some(r#"{"backend":"198.18.1.11:8080","weight":0}"#),
        400,
    );
    assert!(e["error"].as_str().unwrap().contains("weight 0"), "{e}");
    let e = expect(
        &lab,
        "POST",
        "/v1/vips/198.18.0.200:81/backends",
        Some(b2),
        404,
    );
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("198.18.0.200:81/tcp does not exist"),
        "{e}"
    );
    let e = expect(&lab, "POST", "/v1/vips/nonsense/backends", Some(b2), 400);
    assert!(e["error"].as_str().unwrap().starts_with("VIP: "), "{e}");
    // Weight, drain, enable, listing.
    let b2path = format!("{vip81}/backends/198.18.1.12:8080");
    expect(&lab, "PUT", &b2path, Some(r#"{"weight":3}"#), 200);
    expect(
        &lab,
        "PUT",
        &format!("{vip81}/backends/198.18.1.99:8080"),
        Some(r#"{"weight":3}"#),
        404,
    );
    expect(
        &lab,
        "POST",
        &format!("{b2path}/drain"),
        Some(r#"{"repin":true}"#),
        200,
    );
    let rows = expect(
        &lab,
        "GET",
        &format!("/v1/backends?vip={VIP}:81"),
        None,
        200,
    );
    assert_eq!(rows[0]["state"], "draining");
    assert_eq!(rows[0]["weight"], 3);
    expect(&lab, "POST", &format!("{b2path}/enable"), None, 200);
    expect(&lab, "POST", &format!("{b2path}/enable"), None, 409);
    // Removal, twice.
    expect(&lab, "DELETE", &b2path, None, 200);
    expect(&lab, "DELETE", &b2path, None, 404);
    expect(&lab, "DELETE", &vip81, None, 200);
    expect(&lab, "DELETE", &vip81, None, 404);
    let e = expect(&lab, "GET", "/v1/nothing", None, 404);
    assert!(e["error"].is_string());
    let (code, head, text) = curl(&lab, "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert!(head.contains("content-type: text/plain; version=0.0.4"));
    assert!(text.contains("lb_table_capacity{table=\"connections\"}"));
    // Connections and sessions: NDJSON, one real connection.
    let r = lab.http(0, 80, &["--count", "1"]).unwrap();
    assert!(r[0].backend().is_some());
    let (code, head, text) = curl(&lab, "GET", "/v1/sessions", None);
    assert_eq!(code, 200);
    assert!(head.contains("application/x-ndjson"));
    let s: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(s["client"], "198.18.0.11");
}

/// A listing of 200 000 connections streams as NDJSON (chunked, one object a
/// line), and `-o json` of every listing matches its text form.
#[test]
fn listings_stream_and_json_matches_text() {
    let _g = serial();
    let mut lab = Lab::up("lbo-json", Layout::Plain, 1, 2).unwrap();
    lab.start_balancer(&config("web", &[1, 2], 1)).unwrap();
    for _ in 0..3 {
        assert!(lab.http(0, 80, &["--count", "1"]).unwrap()[0]
            .backend()
            .is_some());
    }
    // -o json against the text listings.
    let text = lab.ctl(&["vip", "list"]).unwrap();
    let json: Value =
        serde_json::from_str(&lab.ctl(&["vip", "list", "-o", "json"]).unwrap()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), text.lines().count() - 1);
    assert!(text.contains(json[0]["spec"]["name"].as_str().unwrap()));
    let text = lab.ctl(&["backend", "list"]).unwrap();
    let json: Value =
        serde_json::from_str(&lab.ctl(&["backend", "list", "-o", "json"]).unwrap()).unwrap();
    for (row, line) in json.as_array().unwrap().iter().zip(text.lines().skip(1)) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[2], row["backend"].as_str().unwrap());
        assert_eq!(cols[3], row["state"].as_str().unwrap());
        assert_eq!(cols[6], row["connections"].to_string());
        assert_eq!(cols[7], row["sessions"].to_string());
    }
    // Each row's identity columns (the times move on between the two
    // listings), as sorted lists: the text row of each JSON object.
    for what in ["conns", "sessions"] {
        let text = lab.ctl(&[what]).unwrap();
        let json = lab.ctl(&[what, "-o", "json"]).unwrap();
        let mut from_text: Vec<Vec<String>> = text
            .lines()
            .skip(1)
            .map(|l| {
                let cols: Vec<String> = l.split_whitespace().map(String::from).collect();
                let n = if what == "conns" { 5 } else { 4 };
                cols[..n].to_vec()
            })
            .collect();
        let mut from_json: Vec<Vec<String>> = json
            .lines()
            .map(|l| {
                let r: Value = serde_json::from_str(l).unwrap();
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                if what == "conns" {
                    let state = if r["confirmed"].as_bool().unwrap() {
                        s("state")
                    } else {
                        format!("{}(new)", s("state"))
                    };
                    vec![s("client"), s("vip"), s("backend"), s("protocol"), state]
                } else {
                    vec![
                        format!("{}/{}", s("client"), r["netmask"]),
                        s("vip"),
                        s("protocol"),
                        s("backend"),
                    ]
                }
            })
            .collect();
        from_text.sort();
        from_json.sort();
        assert!(!from_json.is_empty(), "{what}: nothing listed");
        assert_eq!(from_text, from_json, "{what}: {text}\n{json}");
    }
    let status: Value = serde_json::from_str(&lab.ctl(&["status", "-o", "json"]).unwrap()).unwrap();
    assert!(status["program_id"].as_u64().unwrap() > 0);
    assert!(lab.ctl(&["status"]).unwrap().contains("connections"));
    // 200 000 live connections in the table, then the listing.
    let path = lab
        .bpffs()
        .join(format!("lb/v{}/CONNS", lb_common::LAYOUT_VERSION));
    let data = aya::maps::MapData::from_pin(&path).unwrap();
    let mut conns: aya::maps::HashMap<_, lb_common::FlowKey, lb_common::Conn> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).unwrap();
    let now = lb_ctl::kernel::clock::now_ns().unwrap();
    const N: u32 = 200_000;
    for i in 0..N {
        let key = lb_common::FlowKey {
            src_addr: u32::from_ne_bytes([198, 19, (i >> 16) as u8, (i >> 8) as u8]),
            dst_addr: u32::from_ne_bytes(VIP.octets()),
            src_port: (i as u16).to_be(),
            dst_port: 80u16.to_be(),
            proto: 6,
            _pad: [0; 3],
        };
        let conn = lb_common::Conn {
            last_seen_ns: now,
            nat_addr: u32::from_ne_bytes([198, 18, 1, 11]),
            nat_port: 8080u16.to_be(),
            state: lb_common::ConnState::TCP_ESTABLISHED,
            ..lb_common::Conn::default()
        };
        conns.insert(key, conn, 0).unwrap();
    }
    let (code, head, text) = curl(&lab, "GET", "/v1/connections", None);
    assert_eq!(code, 200);
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let lines = text.lines().count();
    assert!(lines >= N as usize, "{lines} lines");
    for l in text.lines().step_by(10_000) {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(v["client"].as_str().unwrap().contains(':'));
    }
}

/// SIGHUP applies a changed file; a bad file changes nothing and says why.
#[test]
fn sighup_reloads_the_config() {
    let _g = serial();
    let mut lab = Lab::up("lbo-hup", Layout::Plain, 1, 2).unwrap();
    lab.start_balancer(&config("web", &[1], 1)).unwrap();
    let path = lab.workdir.join("lb.yaml");
    std::fs::write(&path, config("shop", &[1, 2], 2)).unwrap();
    lab.signal_balancer(nix::sys::signal::Signal::SIGHUP)
        .unwrap();
    wait_for(Duration::from_secs(5), || {
        lab.controller_log().contains("reloaded")
    })
    .unwrap_or_else(|_| panic!("{}", lab.controller_log()));
    let vips = lab.ctl(&["vip", "list"]).unwrap();
    assert!(vips.contains("shop"), "{vips}");
    let backends = lab.ctl(&["backend", "list"]).unwrap();
    assert!(backends.contains("198.18.1.12:8080"), "{backends}");
    // A bad file: refused, nothing changed.
    std::fs::write(&path, config("bad", &[1], 0)).unwrap();
    lab.signal_balancer(nix::sys::signal::Signal::SIGHUP)
        .unwrap();
    wait_for(Duration::from_secs(5), || {
        lab.controller_log().contains("reload refused")
    })
    .unwrap_or_else(|_| panic!("{}", lab.controller_log()));
    let log = lab.controller_log();
    let refusal = log
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(
        refusal.matches("weight 0 is out of range").count(),
        1,
        "the reason once: {refusal}"
    );
    // The same text once from check-config, with its causes in order.
    let out = lab
        .ctl_in_ns(&["check-config", path.to_str().unwrap()])
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("weight 0 is out of range").count(), 1, "{err}");
    assert!(err.contains("lb.yaml: vips[0]: "), "{err}");
    assert_eq!(lab.ctl(&["vip", "list"]).unwrap(), vips);
    assert_eq!(
        lab.ctl(&["backend", "list"]).unwrap().lines().count(),
        backends.lines().count()
    );
    assert!(lab.http(0, 80, &["--count", "2"]).unwrap()[1]
        .backend()
        .is_some());
    // Joining a cluster needs a restart: refused, named, nothing changed.
    std::fs::write(
        &path,
        format!(
            "{}cluster: {{ store: \"redis://198.18.1.10:6379\" }}\n",
            config("shop", &[1], 1)
        ),
    )
    .unwrap();
    lab.signal_balancer(nix::sys::signal::Signal::SIGHUP)
        .unwrap();
    wait_for(Duration::from_secs(5), || {
        lab.controller_log()
            .contains("cluster: cannot change while running")
    })
    .unwrap_or_else(|_| panic!("{}", lab.controller_log()));
    assert_eq!(lab.ctl(&["vip", "list"]).unwrap(), vips);
}

/// The socket is root's: mode 0600 in a 0700 directory, and another user is
/// refused.
#[test]
fn the_socket_is_for_root_only() {
    let _g = serial();
    let mut lab = Lab::up("lbo-perm", Layout::Plain, 1, 1).unwrap();
    lab.start_balancer(&config("web", &[1], 1)).unwrap();
    let mode = std::fs::metadata(&lab.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir = std::fs::metadata(lab.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir & 0o777, 0o700);
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-s",
        ])
        .arg("--unix-socket")
        .arg(&lab.socket)
        .arg("http://lb/v1/vips")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
}

/// Shell completions and the man page come from the command line.
#[test]
fn completions_and_man_pages_are_generated() {
    let ctl = lb_tests::lab::bin_dir().join("lb-ctl");
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(&ctl)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("attach") && text.contains("drain"), "{shell}");
    }
    // One page per command, and every page a page refers to exists.
    let dir = std::env::temp_dir().join(format!("lbo-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(&ctl).arg("man").arg(&dir).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for want in [
        "lb-ctl.1",
        "lb-ctl-attach.1",
        "lb-ctl-vip-add.1",
        "lb-ctl-backend-drain.1",
        "lb-ctl-config-diff.1",
        "lb-ctl-reload.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want}: {pages:?}");
    }
    for page in &pages {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
        // References look like `lb\-ctl\-attach(1)`.
        for (i, _) in text.match_indices("(1)") {
            let start = text[..i]
                .rfind(|c: char| c.is_whitespace() || c == ',')
                .map_or(0, |p| p + 1);
            let name = text[start..i]
                .replace("\\-", "-")
                .replace("\\fB", "")
                .replace("\\fR", "");
            if name.starts_with("lb-ctl") {
                assert!(
                    pages.contains(&format!("{name}.1")),
                    "{page} refers to {name}(1), which was not written: {pages:?}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let bad = Command::new(&ctl)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("tcsh"));
}

/// What lb changes on the interfaces is set at attach and put back at
/// detach; SIGHUP keeps health verdicts and drain; a changed `limits:` is
/// refused by SIGHUP and by a takeover of kept tables, naming the setting.
#[test]
fn interface_settings_reload_state_and_limits() {
    let _g = serial();
    let mut lab = Lab::up("lbo-state", Layout::Plain, 1, 3).unwrap();
    let ns = lab.balancer.ns.clone();
    let read = |key: &str| -> String {
        let out = in_ns(&ns, &["sysctl", "-n", key]).unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // A strict reverse-path filter, as some distributions set.
    in_ns(&ns, &["sysctl", "-qw", "net.ipv4.conf.eth0.rp_filter=1"]).unwrap();
    let keys = [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.send_redirects", "0"),
        ("net.ipv4.conf.eth0.send_redirects", "0"),
        ("net.ipv4.conf.eth0.accept_local", "1"),
        ("net.ipv4.conf.eth0.rp_filter", "2"),
    ];
    let before: Vec<String> = keys.iter().map(|(k, _)| read(k)).collect();
    assert_eq!(before, ["0", "1", "1", "0", "1"], "a fresh namespace");
    let cfg = |max_connections: u32| {
        let mut s = format!(
            "limits: {{ max_connections: {max_connections} }}\nvips:\n  - address: {VIP}\n    port: 80\n    persistence: {{ timeout: 300s }}\n    health_check: {{ kind: http, path: /health, interval: 500ms, timeout: 500ms, rise: 2, fall: 2 }}\n    backends:\n"
        );
        for b in 1..=3 {
            s.push_str(&format!(
                "      - {{ address: 198.18.1.1{b}, port: 8080 }}\n"
            ));
        }
        s
    };
    lab.start_balancer(&cfg(1000)).unwrap();
    for (k, want) in keys {
        assert_eq!(read(k), want, "{k} at attach");
    }
    // b1 down by its checks, b2 drained by hand.
    lab.set_sick(0, true).unwrap();
    wait_for(Duration::from_secs(10), || {
        lab.controller_log()
            .contains("backend 198.18.1.11:8080 is down")
    })
    .unwrap_or_else(|_| panic!("{}", lab.controller_log()));
    lab.ctl(&["backend", "drain", &format!("{VIP}:80"), "198.18.1.12:8080"])
        .unwrap();
    let states = |lab: &Lab| -> Vec<String> {
        lab.ctl(&["backend", "list"])
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                format!("{} {}", cols[2], cols[3])
            })
            .collect()
    };
    let held = states(&lab);
    assert_eq!(
        held,
        [
            "198.18.1.11:8080 down",
            "198.18.1.12:8080 draining",
            "198.18.1.13:8080 up"
        ]
    );
    // SIGHUP with the same file keeps both.
    let path = lab.workdir.join("lb.yaml");
    lab.signal_balancer(nix::sys::signal::Signal::SIGHUP)
        .unwrap();
    wait_for(Duration::from_secs(5), || {
        lab.controller_log().contains("reloaded")
    })
    .unwrap_or_else(|_| panic!("{}", lab.controller_log()));
    assert_eq!(states(&lab), held, "the verdict and the drain are kept");
    // A changed limits: refused, named, nothing changed.
    std::fs::write(&path, cfg(2000)).unwrap();
    lab.signal_balancer(nix::sys::signal::Signal::SIGHUP)
        .unwrap();
    wait_for(Duration::from_secs(5), || {
        lab.controller_log()
            .contains("limits: cannot change while running")
    })
    .unwrap_or_else(|_| panic!("{}", lab.controller_log()));
    assert_eq!(states(&lab), held);
    // Stopped (without --keep-state): every setting is as it was.
    assert!(lab.stop_balancer().unwrap().success());
    let after: Vec<String> = keys.iter().map(|(k, _)| read(k)).collect();
    assert_eq!(after, before, "put back at detach");

    // Kept tables are not taken over with other limits.
    lab.set_sick(0, false).unwrap();
    lab.start_balancer_with(&cfg(1000), &["--keep-state"])
        .unwrap();
    assert!(lab.stop_balancer().unwrap().success());
    let err = lab
        .start_balancer_with(&cfg(2000), &["--keep-state"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds 1000, but limits.max_connections is 2000"),
        "{err}"
    );
    lab.start_balancer_with(&cfg(1000), &["--keep-state"])
        .unwrap();
    assert!(
        lab.controller_log()
            .contains("took over the running data path on eth0"),
        "{}",
        lab.controller_log()
    );
}

/// `lb-ctl reload` applies a good file and refuses a bad one (non-zero
/// exit, the reason, nothing changed); `config dump` round-trips through
/// `check-config` and a reload with no change; `config diff` shows an
/// added backend; READY reaches the service manager once the program is
/// attached, and log lines carry their journal priority under systemd.
#[test]
fn reload_config_dump_and_diff_and_readiness() {
    let _g = serial();
    let mut lab = Lab::up("lbo-reload", Layout::Plain, 1, 3).unwrap();
    // A service manager's notification socket, and the journal's marker.
    let notify = lab.workdir.join("notify.sock");
    let _ = std::fs::remove_file(&notify);
    let manager = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    lab.env = vec![
        (
            "NOTIFY_SOCKET".into(),
            notify.to_string_lossy().into_owned(),
        ),
        ("JOURNAL_STREAM".into(), "8:12345".into()),
    ];
    lab.start_balancer(&config("web", &[1, 2], 1)).unwrap();
    let mut buf = [0u8; 512];
    let n = manager.recv(&mut buf).unwrap();
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(message.contains("READY=1"), "{message}");
    assert!(message.contains("STATUS=forwarding on eth0"), "{message}");
    // Sent once attached: the program runs and the VIP answers.
    assert!(xdp_attached(&lab), "attached before READY");
    let log = lab.controller_log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>lb_ctl") && l.contains("attached to eth0")),
        "info lines carry <6>: {log}"
    );
    let path = lab.workdir.join("lb.yaml");
    let ctl = |args: &[&str]| lab.ctl_in_ns(args).unwrap();
    // A good file: applied.
    std::fs::write(&path, config("web", &[1, 2, 3], 1)).unwrap();
    let out = ctl(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 VIP(s), 3 backend(s)"));
    let listing = lab.ctl(&["backend", "list"]).unwrap();
    assert!(listing.contains("198.18.1.13:8080"), "{listing}");
    // The sweep interval follows a reload.
    std::fs::write(
        &path,
        config("web", &[1, 2, 3], 1).replace("interval: 1s", "interval: 2s"),
    )
    .unwrap();
    assert!(ctl(&["reload"]).status.success());
    lb_tests::lab::wait_for(std::time::Duration::from_secs(5), || {
        lab.controller_log()
            .contains("sweeper: every 2s now (was 1s)")
    })
    .unwrap_or_else(|_| panic!("{}", lab.controller_log()));
    assert!(lab
        .ctl(&["config", "dump"])
        .unwrap()
        .contains("interval: 2s"));
    // A bad file: non-zero, the reason, nothing changed.
    std::fs::write(&path, config("web", &[1], 0)).unwrap();
    let out = ctl(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("weight 0 is out of range"), "{err}");
    assert_eq!(
        lab.ctl(&["backend", "list"]).unwrap().lines().count(),
        listing.lines().count()
    );
    let log = lab.controller_log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("<3>") && l.contains("reload refused")),
        "errors carry <3>: {log}"
    );
    // A runtime change, then the dump: it holds the change, check-config
    // accepts it, and reloading it changes nothing.
    lab.ctl(&[
        "backend",
        "add",
        &format!("{VIP}:80"),
        "198.18.1.14:8080",
        "--weight",
        "3",
    ])
    .unwrap();
    let dump = lab.ctl(&["config", "dump"]).unwrap();
    assert!(
        dump.contains("198.18.1.14") && dump.contains("weight: 3"),
        "{dump}"
    );
    std::fs::write(&path, &dump).unwrap();
    let out = ctl(&["check-config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}\n{dump}");
    let diff = lab
        .ctl(&["config", "diff", path.to_str().unwrap()])
        .unwrap();
    assert!(diff.contains("no change"), "{diff}");
    let before = lab.ctl(&["backend", "list", "-o", "json"]).unwrap();
    let out = ctl(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let after = lab.ctl(&["backend", "list", "-o", "json"]).unwrap();
    let ids = |j: &str| -> Vec<(String, String)> {
        serde_json::from_str::<Vec<Value>>(j)
            .unwrap()
            .iter()
            .map(|r| (r["backend"].to_string(), r["weight"].to_string()))
            .collect()
    };
    assert_eq!(
        ids(&before),
        ids(&after),
        "the dump recreates the running config"
    );
    // The diff of a file with one more backend shows it.
    let mut more: lb_ctl::model::config::Config = serde_yaml::from_str(&dump).unwrap();
    more.vips[0]
        .backends
        .push(lb_ctl::model::config::BackendConfig {
            address: "198.18.1.15".parse().unwrap(),
            port: 8080,
            weight: 1,
        });
    std::fs::write(&path, serde_yaml::to_string(&more).unwrap()).unwrap();
    let out = ctl(&["config", "diff", path.to_str().unwrap()]);
    let diff = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        diff.trim(),
        format!("+ VIP {VIP}:80/tcp: backend 198.18.1.15:8080 (weight 1)"),
        "{diff}"
    );
    assert_eq!(out.status.code(), Some(1), "as diff(1): the file differs");
    // Trouble is 2, as for diff(1), with the reason.
    let out = ctl(&["config", "diff", "/nonexistent/lb.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/lb.yaml"));
}

/// Whether an XDP program is attached to the balancer's eth0.
fn xdp_attached(lab: &Lab) -> bool {
    let out = in_ns(&lab.balancer.ns, &["ip", "-d", "link", "show", "eth0"]).unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}
