//! Unit tests of `config`.

use super::*;

const EXAMPLE: &str = include_str!("../../../configs/example.yaml");

#[test]
fn the_example_config_is_valid() {
    use crate::model::services::{Forwarding, Mode};

    let (config, services) = Config::parse(EXAMPLE, "example.yaml").unwrap();
    assert_eq!(config.timeouts.tcp_established, Duration::from_secs(900));
    assert_eq!(config.sweeper.interval, Duration::from_secs(5));
    assert_eq!(config.vips.len(), 3);
    assert_eq!(services.vips().count(), 3);
    assert_eq!(services.vips().map(|v| v.backends.len()).sum::<usize>(), 8);
    // The cluster block stays commented out: it needs a Redis server.
    assert!(config.cluster.is_none());
    let vip = |name: &str| {
        services
            .vips()
            .find(|v| v.spec.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no VIP named {name}"))
    };
    let web = vip("web");
    assert_eq!(web.spec.persistence_timeout, Duration::from_secs(300));
    assert_eq!(web.backends.len(), 3);
    let dsr = vip("web-dsr");
    assert_eq!(
        (dsr.spec.scheduler, dsr.spec.forwarding),
        (Scheduler::Maglev, Forwarding::Dsr)
    );
    assert_eq!(dsr.backends.len(), 2);
    let shop = vip("shop");
    assert_eq!(shop.spec.mode, Mode::Http);
    assert_eq!(shop.backends.len(), 3);
    assert_eq!(
        shop.spec.cookie.as_ref().map(|c| c.name.as_str()),
        Some("SRVID")
    );
}

#[test]
fn defaults_apply_to_an_empty_file() {
    let (config, services) = Config::parse("", "empty.yaml").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(services.vips().count(), 0);
    assert_eq!(config.timeouts.udp, Duration::from_secs(300));
}

#[test]
fn durations_take_units() {
    let (c, _) = Config::parse("timeouts:\n  udp: 5m\n  tcp_syn: 1h 30m\n", "t").unwrap();
    assert_eq!(c.timeouts.udp, Duration::from_secs(300));
    assert_eq!(c.timeouts.tcp_syn, Duration::from_secs(5400));
}

fn err(text: &str) -> String {
    Config::parse(text, "lb.yaml").unwrap_err().to_string()
}

#[test]
fn errors_name_the_field() {
    assert!(err("vips: []\nbogus: 1\n").contains("unknown field `bogus`"));
    assert!(
        err("vips:\n  - {address: 198.18.0.100, port: 80, color: red}\n")
            .contains("unknown field `color`")
    );
    assert!(err("vips:\n  - {address: 198.18.0.300, port: 80}\n").contains("vips[0]"));
    assert!(err("timeouts:\n  udp: 5 parsecs\n").contains("timeouts.udp"));
    assert!(err("limits:\n  max_connections: 0\n").contains("limits.max_connections"));
    assert!(err("sweeper:\n  interval: 0s\n").contains("sweeper.interval"));
    let e = err("vips:\n  - {address: 198.18.0.100, port: 80, backends: [{address: 198.18.1.1, port: 80, weight: 0}]}\n");
    assert!(e.contains("vips[0]") && e.contains("weight 0"), "{e}");
    let e = err(
        "vips:\n  - {address: 198.18.0.100, port: 80}\n  - {address: 198.18.0.100, port: 80}\n",
    );
    assert!(e.contains("vips[1]") && e.contains("already exists"), "{e}");
    assert!(err("vips:\n  - {address: 198.18.0.100, port: 0}\n").contains("port 0"));
    assert!(
        err("vips:\n  - {address: 198.18.0.100, port: 80, scheduler: lc}\n")
            .contains("unknown variant `lc`")
    );
}

#[test]
fn the_cluster_block_is_checked_naming_the_field() {
    for (block, want) in [
        (
            "{ store: \"198.18.4.10:6379\" }",
            "cluster.store: \"198.18.4.10:6379\" is not a Redis URL",
        ),
        ("{ store: \"http://198.18.4.10\" }", "is not a Redis URL"),
        (
            "{ store: \"redis://198.18.4.10\", node: \"lb a\" }",
            "cluster.node: \"lb a\"",
        ),
        (
            "{ store: \"redis://198.18.4.10\", stream: \"\" }",
            "cluster.stream: must not be empty",
        ),
        (
            "{ store: \"redis://198.18.4.10\", stream_max_len: 10 }",
            "cluster.stream_max_len: 10 is too small",
        ),
        (
            "{ store: \"redis://198.18.4.10\", peers: [] }",
            "unknown field `peers`",
        ),
    ] {
        let e = err(&format!("cluster: {block}\n"));
        assert!(e.contains(want), "{block}: {e}");
    }
    let block = "vips:\n  - { address: 198.18.0.100, port: 80, persistence: { timeout: 10s } }\ncluster: { store: \"redis://198.18.4.10\" }\n";
    let e = err(block);
    assert!(
        e.contains(
            "vips[0]: persistence.timeout 10s is too short to share with sweeper.interval 5s"
        ),
        "{block}: {e}"
    );
    assert!(Config::parse("cluster: { store: \"redis://198.18.4.10\" }\n", "t").is_ok());
    let (config, _) = Config::parse(
        "cluster: { store: \"redis://198.18.4.10:6379\", node: lb-a }\n",
        "t",
    )
    .unwrap();
    let cluster = config.cluster.unwrap();
    let s = cluster.settings(None).unwrap();
    assert_eq!(
        (s.node.as_str(), s.stream.as_str(), s.stream_max_len),
        ("lb-a", "lb:sessions", 1_000_000)
    );
    assert_eq!(
        cluster.settings(Some("lb-b")).unwrap().node,
        "lb-b",
        "--node wins"
    );
}

#[test]
fn bad_health_checks_are_refused_naming_the_field() {
    let with = |check: &str| {
        err(&format!(
            "vips:\n  - address: 198.18.0.100\n    port: 80\n    health_check: {{ {check} }}\n"
        ))
    };
    for (check, want) in [
        ("rise: 0", "health_check.rise must be 1 or more, not 0"),
        ("fall: 0", "health_check.fall must be 1 or more, not 0"),
        (
            "interval: 0s",
            "health_check.interval must be longer than zero",
        ),
        (
            "timeout: 0s",
            "health_check.timeout must be longer than zero",
        ),
        (
            "interval: 1s, timeout: 2s",
            "health_check.timeout (2s) must not be longer than health_check.interval (1s)",
        ),
        (
            "kind: http, path: health",
            "health_check.path \"health\" must start with '/'",
        ),
        ("kind: smtp", "unknown variant `smtp`"),
        ("retries: 3", "unknown field `retries`"),
    ] {
        let e = with(check);
        assert!(e.contains(want), "{check}: {e}");
        if !want.starts_with("unknown") {
            assert!(e.contains("vips[0]: VIP 198.18.0.100:80/tcp"), "{e}");
        }
    }
    // The defaults of the contract.
    let (c, s) = Config::parse(
        "vips:\n  - address: 198.18.0.100\n    port: 80\n    health_check: {}\n    persistence: { timeout: 300s, max_lifetime: 8h }\n",
        "t",
    )
    .unwrap();
    let check = c.vips[0].health_check.clone().unwrap();
    assert_eq!(check, crate::model::health::HealthCheck::default());
    assert_eq!(
        (
            check.interval,
            check.timeout,
            check.rise,
            check.fall,
            check.path.as_str()
        ),
        (Duration::from_secs(2), Duration::from_secs(1), 2, 3, "/")
    );
    let v = s.vips().next().unwrap();
    assert_eq!(v.spec.max_lifetime, Duration::from_secs(8 * 3600));
    assert_eq!(v.spec.health_check, Some(check));
}

#[test]
fn store_passwords_are_redacted_and_kept_out_of_the_config() {
    assert_eq!(
        redact("redis://:s3cret@198.18.4.10:6379/2"),
        "redis://:***@198.18.4.10:6379/2"
    );
    assert_eq!(
        redact("rediss://lb:s3cret@redis.example:6380"),
        "rediss://lb:***@redis.example:6380"
    );
    assert_eq!(
        redact("redis://198.18.4.10:6379"),
        "redis://198.18.4.10:6379"
    );
    assert_eq!(redact("redis://user@host:1"), "redis://user@host:1");
    // A password file: read, its first line; the URL must not have one too.
    let dir = std::env::temp_dir().join(format!("lb-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pw");
    std::fs::write(&file, "s3cret\n").unwrap();
    let cluster = |store: &str, extra: &str| -> Result<ClusterSettings, String> {
        let (c, _) = Config::parse(&format!("cluster: {{ store: \"{store}\"{extra} }}\n"), "t")
            .map_err(|e| e.to_string())?;
        c.cluster.unwrap().settings(Some("a"))
    };
    let s = cluster(
        "redis://198.18.4.10:6379",
        &format!(", store_password_file: {}", file.display()),
    )
    .unwrap();
    assert_eq!(s.password.as_deref(), Some("s3cret"));
    assert!(!format!("{s:?}").contains("s3cret"), "{s:?}");
    let e = cluster(
        "redis://:x@198.18.4.10:6379",
        &format!(", store_password_file: {}", file.display()),
    )
    .unwrap_err();
    assert!(e.contains("cluster.store_password_file"), "{e}");
    let e = cluster(
        "redis://198.18.4.10:6379",
        ", store_password_file: /nonexistent/pw",
    )
    .unwrap_err();
    assert!(
        e.contains("cluster.store_password_file: /nonexistent/pw"),
        "{e}"
    );
    // TLS: rediss:// is accepted; a CA file only with it.
    assert!(cluster("rediss://198.18.4.10:6380", "").is_ok());
    let e = cluster("redis://198.18.4.10:6379", ", store_ca_file: /etc/hostname").unwrap_err();
    assert!(e.contains("cluster.store_ca_file"), "{e}");
    let e = cluster("redis://:s3cret@198.18.4.10:70000", "").unwrap_err();
    assert!(!e.contains("s3cret") || e.contains("***"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_announce_block_parses_and_its_errors_name_the_field() {
    use crate::model::announce::When;
    let (c, _) = Config::parse("announce: {}\n", "t.yaml").unwrap();
    let a = c.announce.unwrap();
    assert_eq!(
        (
            a.interface.as_str(),
            a.when,
            a.delay.as_secs(),
            a.drain.as_secs()
        ),
        ("lb-vips", When::Healthy, 5, 10)
    );
    let (c, _) = Config::parse(
        "announce: { interface: vips0, when: always, delay: 0s, drain: 2s }\n",
        "t.yaml",
    )
    .unwrap();
    assert_eq!(c.announce.unwrap().when, When::Always);
    assert!(Config::parse("", "t.yaml").unwrap().0.announce.is_none());
    for (text, field) in [
        (
            "announce: { interface: \"lb vips\" }\n",
            "announce.interface",
        ),
        ("announce: { drain: 2m }\n", "announce.drain"),
        ("announce: { when: sometimes }\n", "when"),
        ("announce: { color: red }\n", "color"),
    ] {
        let e = Config::parse(text, "t.yaml").unwrap_err().to_string();
        assert!(e.contains("t.yaml") && e.contains(field), "{text}: {e}");
    }
}

#[test]
fn ipv6_tcp_vips_take_netmask6_and_check_it() {
    let vip = |persistence: &str| {
        format!(
            "vips:\n  - address: \"2001:db8:18::100\"\n    port: 80\n    persistence: {persistence}\n    backends: [ {{ address: \"2001:db8:18:1::11\", port: 8080 }} ]\n"
        )
    };
    let (_, services) = Config::parse(&vip("{ timeout: 300s }"), "t.yaml").unwrap();
    let v = services.vips().next().unwrap();
    assert_eq!(v.spec.persistence_netmask6, 64, "a /64 by default");
    let (_, services) = Config::parse(&vip("{ timeout: 300s, netmask6: 56 }"), "t.yaml").unwrap();
    assert_eq!(
        services.vips().next().unwrap().spec.persistence_netmask6,
        56
    );
    let e = Config::parse(&vip("{ timeout: 300s, netmask6: 129 }"), "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("vips[0]")
            && e.contains("[2001:db8:18::100]:80/tcp")
            && e.contains("netmask6 /129"),
        "{e}"
    );
    // A backend of the other family than its VIP's is named.
    let e = Config::parse(
        "vips:\n  - address: 198.18.0.100\n    port: 80\n    backends: [ { address: \"2001:db8:18:1::11\", port: 8080 } ]\n",
        "t.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("[2001:db8:18:1::11]:8080") && e.contains("other address family"),
        "{e}"
    );
}

#[test]
fn tls_is_checked_naming_the_vip_and_field() {
    let vip = |extra: &str| {
        format!(
            "vips:\n  - address: 198.18.0.100\n    port: 443\n{extra}    backends: [ {{ address: 198.18.1.11, port: 8080 }} ]\n"
        )
    };
    let e = Config::parse(
        &vip("    tls: { certificates: [ { cert: /nonexistent/a.pem, key: /nonexistent/a.key } ] }\n"),
        "lb.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("vips[0]") && e.contains("tls needs mode: http"),
        "{e}"
    );
    let e = Config::parse(
        &vip("    mode: http\n    tls: { certificates: [ { cert: /nonexistent/a.pem, key: /nonexistent/a.key } ] }\n"),
        "lb.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("config file lb.yaml: vips[0]: tls.certificates[0].cert: cannot read /nonexistent/a.pem"),
        "{e}"
    );
    let e = Config::parse(
        &vip("    mode: http\n    tls: { certificates: [ { cert: a, key: b } ], alpn: [h3] }\n"),
        "lb.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("vips[0]") && e.contains("tls.alpn[0]: \"h3\""),
        "{e}"
    );
    let e = Config::parse(
        &vip("    mode: http\n    tls: { certificates: [ { cert: a, key: b } ], min_version: 1.1 }\n"),
        "lb.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("tls.min_version: TLS 1.1 is not offered"), "{e}");
}

#[test]
fn ipv6_vips_are_served_by_the_proxy_and_the_data_path() {
    let vip = |mode: &str, backend: &str| {
        format!(
            "vips:\n  - address: \"2001:db8:18::100\"\n    port: 80\n    mode: {mode}\n    backends: [ {{ address: \"{backend}\", port: 8080 }} ]\n"
        )
    };
    let (_, services) = Config::parse(&vip("http", "2001:db8:18:1::11"), "lb.yaml").unwrap();
    let v = services.vips().next().unwrap();
    assert_eq!(v.spec.id.endpoint.to_string(), "[2001:db8:18::100]:80");
    assert_eq!(
        v.backends[0].endpoint.to_string(),
        "[2001:db8:18:1::11]:8080"
    );
    let (_, services) = Config::parse(&vip("tcp", "2001:db8:18:1::11"), "lb.yaml").unwrap();
    assert_eq!(services.vips().count(), 1, "the XDP path balances IPv6");
    let e = Config::parse(&vip("http", "198.18.1.11"), "lb.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("backend 198.18.1.11:8080 is of the other address family"),
        "{e}"
    );
    let (config, _) = Config::parse(
        &(vip("http", "2001:db8:18:1::11") + "announce: { interface: lb-vips }\n"),
        "lb.yaml",
    )
    .unwrap();
    assert!(config.announce.is_some(), "IPv6 VIPs are announced too");
}
