//! Prometheus text exposition of the data path's counters.

use std::fmt::Write as _;

use crate::{
    controller::report::Stats,
    model::endpoint::{Endpoint, VipId},
};

/// A label value as the text format wants it: backslash, double quote and
/// line feed escaped.
#[must_use]
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The exposition being written.
#[derive(Default)]
struct Text(String);

impl Text {
    /// One metric family: its help, its type and its samples.
    fn family(&mut self, name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, value) in rows {
            if labels.is_empty() {
                let _ = writeln!(self.0, "{name} {value}");
            } else {
                let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
            }
        }
    }
}

fn vip_label(id: &VipId, name: &Option<String>) -> String {
    format!(
        "vip=\"{}\",protocol=\"{}\",name=\"{}\"",
        id.endpoint,
        id.protocol.as_str(),
        escape(name.as_deref().unwrap_or(""))
    )
}

fn be_label(id: &VipId, b: &Endpoint) -> String {
    format!(
        "vip=\"{}\",protocol=\"{}\",backend=\"{b}\"",
        id.endpoint,
        id.protocol.as_str()
    )
}

/// Render `stats` in the Prometheus text format (version 0.0.4).
#[must_use]
pub fn render(stats: &Stats) -> String {
    let mut t = Text::default();
    traffic(&mut t, stats);
    datapath(&mut t, stats);
    http(&mut t, stats);
    tables(&mut t, stats);
    cluster(&mut t, stats);
    http_latency(&mut t, stats);
    tls(&mut t, stats);
    sweep(&mut t, stats);
    announced(&mut t, stats);
    t.0
}

/// The VIP addresses announced by BGP (`announce:` only).
fn announced(t: &mut Text, stats: &Stats) {
    if stats.announced.is_empty() {
        return;
    }
    t.family(
        "lb_vip_announced",
        "gauge",
        "1 while the VIP address is on the announce interface (the BGP daemon announces it), 0 while it is withdrawn.",
        stats
            .announced
            .iter()
            .map(|(addr, on)| (format!("address=\"{addr}\""), u64::from(*on)))
            .collect(),
    );
}

/// Packets, bytes and new connections per VIP and per backend.
fn traffic(t: &mut Text, stats: &Stats) {
    for (what, help, pick) in [
        (
            "packets",
            "Packets forwarded for the VIP, both directions.",
            0,
        ),
        ("bytes", "Bytes forwarded for the VIP, both directions.", 1),
        ("connections", "New connections scheduled to the VIP.", 2),
    ] {
        let value = |t: &crate::kernel::stats::Traffic| match pick {
            0 => t.packets,
            1 => t.bytes,
            _ => t.new_conns,
        };
        t.family(
            &format!("lb_vip_{what}_total"),
            "counter",
            help,
            stats
                .vips
                .iter()
                .map(|(id, n, t)| (vip_label(id, n), value(t)))
                .collect(),
        );
        t.family(
            &format!("lb_backend_{what}_total"),
            "counter",
            &help.replace("the VIP", "the backend"),
            stats
                .backends
                .iter()
                .map(|(id, b, t)| (be_label(id, b), value(t)))
                .collect(),
        );
    }
}

/// What the data path did, by reason; ICMP errors; the backends' states and checks.
fn datapath(t: &mut Text, stats: &Stats) {
    t.family(
        "lb_datapath_events_total",
        "counter",
        "Data-path outcomes by reason (verdicts, passes, drops, table events).",
        stats
            .reasons
            .iter()
            .map(|(r, v)| (format!("reason=\"{r}\""), *v))
            .collect(),
    );
    t.family(
        "lb_icmp_errors_total",
        "counter",
        "ICMP errors (destination unreachable, time exceeded, parameter problem) by outcome: \
         translated for a balanced flow (to_backend, to_client, to_dsr_backend) or passed to \
         the kernel untouched (unmatched, not_tcp_udp, truncated, malformed, unsupported).",
        stats
            .icmp
            .iter()
            .map(|(r, v)| (format!("outcome=\"{r}\""), *v))
            .collect(),
    );
    t.family(
        "lb_backend_up",
        "gauge",
        "1 while the backend passes its health checks (or has none), 0 while it is down.",
        stats
            .backend_states
            .iter()
            .map(|b| (be_label(&b.vip, &b.backend), u64::from(b.up)))
            .collect(),
    );
    t.family(
        "lb_backend_state",
        "gauge",
        "1 for the backend's current state: up, down, draining, or down, draining.",
        stats
            .backend_states
            .iter()
            .map(|b| {
                (
                    format!("{},state=\"{}\"", be_label(&b.vip, &b.backend), b.state),
                    1,
                )
            })
            .collect(),
    );
    t.family(
        "lb_backend_checks_total",
        "counter",
        "Health checks of the backend by result (ok, failed).",
        stats
            .backend_states
            .iter()
            .filter_map(|b| b.checks.map(|c| (b, c)))
            .flat_map(|(b, (ok, failed))| {
                [("ok", ok), ("failed", failed)].map(|(result, v)| {
                    (
                        format!("{},result=\"{result}\"", be_label(&b.vip, &b.backend)),
                        v,
                    )
                })
            })
            .collect(),
    );
}

/// The layer-7 proxy's counters.
fn http(t: &mut Text, stats: &Stats) {
    let http_label = |vip: &crate::model::endpoint::VipId,
                      b: &Option<crate::model::endpoint::Endpoint>| match b {
        Some(b) => be_label(vip, b),
        None => format!(
            "vip=\"{}\",protocol=\"{}\"",
            vip.endpoint,
            vip.protocol.as_str()
        ),
    };
    for (what, help, pick) in [
        ("requests", "HTTP requests served by the layer-7 proxy (per VIP without a backend label, and per backend).", 0),
        ("cookie_hits", "Requests routed by a valid persistence cookie.", 1),
        ("cookie_inserts", "Persistence cookies issued (new users, invalid cookies, redispatches).", 2),
        ("cookie_invalid", "Requests whose cookie was not honoured (tampered, expired, unknown, backend gone, down or draining).", 3),
        ("redispatches", "Requests retried on another backend after a connect failure.", 4),
        ("upstream_errors", "Requests that failed upstream (502/503).", 5),
        ("bad_requests", "Malformed requests, answered 400 by the proxy.", 6),
    ] {
        t.family(
            &format!("lb_http_{what}_total"),
            "counter",
            help,
            stats
                .http
                .iter()
                .map(|(vip, b, c)| {
                    let v = match pick {
                        0 => c.requests,
                        1 => c.cookie_hits,
                        2 => c.cookie_inserts,
                        3 => c.cookie_invalid,
                        4 => c.redispatches,
                        5 => c.upstream_errors,
                        _ => c.bad_requests,
                    };
                    (http_label(vip, b), v)
                })
                .collect(),
        );
    }
}

/// TLS termination (`tls:` VIPs only): handshakes, what they agreed, and
/// the certificates' remaining validity.
fn tls(t: &mut Text, stats: &Stats) {
    let vips: Vec<_> = stats
        .http
        .iter()
        .filter(|(vip, b, _)| {
            b.is_none() && stats.tls_certificates.iter().any(|(id, _, _)| id == vip)
        })
        .map(|(vip, _, c)| {
            (
                format!(
                    "vip=\"{}\",protocol=\"{}\"",
                    vip.endpoint,
                    vip.protocol.as_str()
                ),
                c,
            )
        })
        .collect();
    let rows = |pick: &dyn Fn(&crate::l7::proxy::HttpCounters) -> Vec<(&'static str, u64)>| {
        vips.iter()
            .flat_map(|(label, c)| {
                pick(c).into_iter().map(move |(extra, v)| {
                    let labels = if extra.is_empty() {
                        label.clone()
                    } else {
                        format!("{label},{extra}")
                    };
                    (labels, v)
                })
            })
            .collect::<Vec<_>>()
    };
    if !vips.is_empty() {
        t.family(
            "lb_tls_handshakes_total",
            "counter",
            "TLS handshakes with clients, by result: ok, failed (a client or protocol error), timeout.",
            rows(&|c| {
                vec![
                    ("result=\"ok\"", c.tls_handshakes[0]),
                    ("result=\"failed\"", c.tls_handshakes[1]),
                    ("result=\"timeout\"", c.tls_handshakes[2]),
                ]
            }),
        );
        t.family(
            "lb_tls_resumed_total",
            "counter",
            "TLS handshakes that resumed a session (ticket or session id).",
            rows(&|c| vec![("", c.tls_resumed)]),
        );
        t.family(
            "lb_tls_version_total",
            "counter",
            "TLS handshakes done, by the version agreed.",
            rows(&|c| {
                vec![
                    ("version=\"1.2\"", c.tls_versions[0]),
                    ("version=\"1.3\"", c.tls_versions[1]),
                ]
            }),
        );
        t.family(
            "lb_tls_alpn_total",
            "counter",
            "TLS handshakes done, by the application protocol agreed (ALPN; none: the client offered none lb serves).",
            rows(&|c| {
                vec![
                    ("alpn=\"h2\"", c.tls_alpn[0]),
                    ("alpn=\"http/1.1\"", c.tls_alpn[1]),
                    ("alpn=\"none\"", c.tls_alpn[2]),
                ]
            }),
        );
    }
    if stats.tls_certificates.is_empty() {
        return;
    }
    let now = crate::model::tls::unix(std::time::SystemTime::now());
    let _ = writeln!(
        t.0,
        "# HELP lb_tls_certificate_expiry_seconds Seconds until the certificate expires (negative once it has); alert well before 0."
    );
    let _ = writeln!(t.0, "# TYPE lb_tls_certificate_expiry_seconds gauge");
    for (vip, file, end) in &stats.tls_certificates {
        let _ = writeln!(
            t.0,
            "lb_tls_certificate_expiry_seconds{{vip=\"{}\",protocol=\"{}\",certificate=\"{}\"}} {}",
            vip.endpoint,
            vip.protocol.as_str(),
            escape(file),
            end - now
        );
    }
}

/// The devices' XDP errors and the tables: capacity, entries, what the sweeps deleted, evictions.
fn tables(t: &mut Text, stats: &Stats) {
    t.family(
        "lb_device_xdp_errors_total",
        "counter",
        "Frames the XDP program sent (XDP_TX or redirect) that the device's driver dropped, by driver statistic (ethtool -S).",
        stats
            .device_xdp_errors
            .iter()
            .map(|(iface, stat, v)| (format!("interface=\"{iface}\",statistic=\"{stat}\""), *v))
            .collect(),
    );
    t.family(
        "lb_table_capacity",
        "gauge",
        "Size limit of each table: connections (confirmed), half_open (unconfirmed flows), sessions, pending (sessions of unconfirmed first connections).",
        vec![
            (
                "table=\"connections\"".to_string(),
                u64::from(stats.max_conns),
            ),
            (
                "table=\"half_open\"".to_string(),
                u64::from(stats.max_half_open),
            ),
            (
                "table=\"sessions\"".to_string(),
                u64::from(stats.max_sessions),
            ),
            (
                "table=\"pending\"".to_string(),
                u64::from(stats.max_half_open),
            ),
        ],
    );
    t.family(
        "lb_table_entries",
        "gauge",
        "Entries in each table after the last sweep (connections: two per connection; half_open: one per unconfirmed flow).",
        stats
            .table_entries
            .iter()
            .map(|(t, v)| (format!("table=\"{t}\""), *v))
            .collect(),
    );
    t.family(
        "lb_sweep_deleted_total",
        "counter",
        "Expired entries the sweeps deleted, by table (half_open and pending: always 0, the data path reuses their expired entries).",
        stats
            .sweep_deleted
            .iter()
            .map(|(t, v)| (format!("table=\"{t}\""), *v))
            .collect(),
    );
    t.family(
        "lb_half_open_evictions_total",
        "counter",
        "Unconfirmed flows (TCP half-open, UDP unanswered) pushed out of a full set of the half-open table by newer ones, as the data path counts them (read at each sweep).",
        vec![(String::new(), stats.half_open_evictions)],
    );
}

/// Sessions shared with the other hosts.
fn cluster(t: &mut Text, stats: &Stats) {
    if let Some(c) = &stats.cluster {
        let node = format!("node=\"{}\"", escape(&c.node));
        t.family(
            "lb_cluster_store_up",
            "gauge",
            "1 while the cluster's store (Redis) answers; 0: this host goes on alone.",
            vec![(node.clone(), u64::from(c.up))],
        );
        t.family(
            "lb_cluster_published_total",
            "counter",
            "Sessions published to the store (new ones and refreshes).",
            vec![(node.clone(), c.published)],
        );
        t.family(
            "lb_cluster_publish_dropped_total",
            "counter",
            "Sessions not published (store unreachable, queue or the data path's ring full); live ones are published again on the next pass.",
            vec![(node.clone(), c.publish_dropped)],
        );
        t.family(
            "lb_cluster_received_total",
            "counter",
            "Other hosts' sessions read from the store, by result (installed, kept_local: this host's was newer, expired, unplaced: VIP or backend not here, malformed, install_failed: table full).",
            c.received
                .iter()
                .map(|(r, v)| (format!("{node},result=\"{r}\""), *v))
                .collect(),
        );
    }
    if let Some(c) = stats.cluster.as_ref().filter(|c| c.lag_p50_ms.is_some()) {
        let _ = writeln!(
            t.0,
            "# HELP lb_cluster_publish_lag_seconds Time from a new session on another host to its installation here, over the last {} such sessions.",
            crate::cluster::store::LAGS
        );
        let _ = writeln!(t.0, "# TYPE lb_cluster_publish_lag_seconds summary");
        for (q, v) in [("0.5", c.lag_p50_ms), ("0.99", c.lag_p99_ms)] {
            let _ = writeln!(
                t.0,
                "lb_cluster_publish_lag_seconds{{node=\"{}\",quantile=\"{q}\"}} {}",
                escape(&c.node),
                f64::from(v.unwrap_or(0)) / 1e3
            );
        }
    }
}

/// The proxy's request durations, as a histogram.
fn http_latency(t: &mut Text, stats: &Stats) {
    let vips_http: Vec<_> = stats.http.iter().filter(|(_, b, _)| b.is_none()).collect();
    if !vips_http.is_empty() {
        let _ = writeln!(
            t.0,
            "# HELP lb_http_request_duration_seconds Time from a request's arrival to its response head, through the proxy."
        );
        let _ = writeln!(t.0, "# TYPE lb_http_request_duration_seconds histogram");
        for (vip, _, c) in vips_http {
            let label = format!(
                "vip=\"{}\",protocol=\"{}\"",
                vip.endpoint,
                vip.protocol.as_str()
            );
            let mut cumulative = 0;
            for (i, bound) in crate::l7::proxy::LATENCY_BUCKETS.iter().enumerate() {
                cumulative += c.latency[i];
                let _ = writeln!(
                    t.0,
                    "lb_http_request_duration_seconds_bucket{{{label},le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += c.latency[7];
            let _ = writeln!(
                t.0,
                "lb_http_request_duration_seconds_bucket{{{label},le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                t.0,
                "lb_http_request_duration_seconds_sum{{{label}}} {}",
                c.latency_sum_us as f64 / 1e6
            );
            let _ = writeln!(
                t.0,
                "lb_http_request_duration_seconds_count{{{label}}} {cumulative}"
            );
        }
    }
}

/// The last sweep.
fn sweep(t: &mut Text, stats: &Stats) {
    if let Some(seconds) = stats.last_sweep_seconds {
        let _ = writeln!(
            t.0,
            "# HELP lb_sweep_duration_seconds How long the last sweep of the tables took."
        );
        let _ = writeln!(t.0, "# TYPE lb_sweep_duration_seconds gauge");
        let _ = writeln!(t.0, "lb_sweep_duration_seconds {seconds}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controller::report::Stats,
        kernel::stats::Traffic,
        model::endpoint::{Endpoint, Protocol, VipId},
    };

    #[test]
    fn names_with_quotes_backslashes_and_newlines_still_parse() {
        let id = VipId {
            endpoint: Endpoint {
                addr: std::net::Ipv4Addr::new(198, 18, 0, 100).into(),
                port: 80,
            },
            protocol: Protocol::Tcp,
        };
        let name = "we\"b\\shop\nline two".to_string();
        let stats = Stats {
            vips: vec![(
                id,
                Some(name.clone()),
                Traffic {
                    packets: 7,
                    bytes: 700,
                    new_conns: 1,
                },
            )],
            backends: Vec::new(),
            reasons: vec![("tx".into(), 7)],
            icmp: vec![("to_backend".into(), 2)],
            max_conns: 10,
            max_sessions: 10,
            device_xdp_errors: Vec::new(),
            backend_states: Vec::new(),
            table_entries: vec![("connections".into(), 2)],
            half_open_evictions: 0,
            max_half_open: 10,
            last_sweep_seconds: Some(0.25),
            sweep_deleted: vec![("connections".into(), 3)],
            http: vec![(
                id,
                None,
                crate::l7::proxy::HttpCounters {
                    tls_handshakes: [5, 2, 1],
                    tls_versions: [1, 4],
                    ..Default::default()
                },
            )],
            tls_certificates: vec![(id, "/etc/lb/shop.pem".into(), 0)],
            announced: vec![("198.18.0.100".parse().unwrap(), true)],
            cluster: Some(crate::cluster::store::Snapshot {
                node: "lb-a".into(),
                store: "redis://198.18.4.10:6379".into(),
                up: true,
                published: 5,
                publish_dropped: 1,
                received: vec![("installed".into(), 4)],
                lag_p50_ms: Some(3),
                lag_p99_ms: Some(40),
            }),
        };
        let text = render(&stats);
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let packets = scrape
            .samples
            .iter()
            .find(|s| s.metric == "lb_vip_packets_total")
            .expect("the VIP's sample");
        // The parser hands label values over as written (escaped): undo the
        // three escapes the format has and compare.
        let raw = packets.labels.get("name").expect("the name label");
        let mut unescaped = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => unescaped.push('\n'),
                    Some(other) => unescaped.push(other),
                    None => {}
                }
            } else {
                unescaped.push(c);
            }
        }
        assert_eq!(unescaped, name, "{text}");
        assert!(matches!(packets.value, prometheus_parse::Value::Counter(v) if v == 7.0));
        let sweep = scrape
            .samples
            .iter()
            .find(|s| s.metric == "lb_sweep_duration_seconds")
            .expect("the sweep's duration");
        assert!(matches!(sweep.value, prometheus_parse::Value::Gauge(v) if v == 0.25));
        let value = |metric: &str, label: (&str, &str)| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == metric && s.labels.get(label.0) == Some(label.1))
                .map(|s| s.value.clone())
        };
        assert!(matches!(
            value("lb_cluster_received_total", ("result", "installed")),
            Some(prometheus_parse::Value::Counter(v)) if v == 4.0
        ));
        assert!(matches!(
            value("lb_cluster_store_up", ("node", "lb-a")),
            Some(prometheus_parse::Value::Gauge(v)) if v == 1.0
        ));
        assert!(matches!(
            value("lb_icmp_errors_total", ("outcome", "to_backend")),
            Some(prometheus_parse::Value::Counter(v)) if v == 2.0
        ));
        assert!(matches!(
            value("lb_tls_handshakes_total", ("result", "timeout")),
            Some(prometheus_parse::Value::Counter(v)) if v == 1.0
        ));
        assert!(matches!(
            value("lb_tls_version_total", ("version", "1.3")),
            Some(prometheus_parse::Value::Counter(v)) if v == 4.0
        ));
        assert!(matches!(
            value("lb_tls_certificate_expiry_seconds", ("certificate", "/etc/lb/shop.pem")),
            Some(prometheus_parse::Value::Gauge(v)) if v < -1.0e9
        ));
        assert!(
            text.contains("lb_cluster_publish_lag_seconds{node=\"lb-a\",quantile=\"0.99\"} 0.04"),
            "{text}"
        );
        // Every sample line parsed (none was split by the newline).
        // (A summary's quantile lines make one sample, and so do a
        // histogram's.)
        let histogram = "lb_http_request_duration_seconds";
        let lines = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains("quantile=\"0.5\""))
            .filter(|l| !l.starts_with(histogram))
            .count();
        let histograms = scrape
            .samples
            .iter()
            .filter(|s| s.metric.starts_with(histogram))
            .count();
        assert_eq!(scrape.samples.len() - histograms, lines, "{text}");
    }
}
