//! The answers printed as tables for people (`-o json` prints them as
//! they came).

use std::time::Duration;

use crate::{
    controller::report::{BackendRow, Status, VipRow},
    kernel::lister::{ConnView, SessionView},
    model::endpoint::VipId,
};

pub fn print_status(s: &Status) {
    println!(
        "interfaces:  {} ({} mode: {})",
        s.interfaces.join(", "),
        s.mode,
        s.mode_reason
    );
    println!(
        "program:     id {}; links {}",
        s.program_id
            .map_or_else(|| "?".to_string(), |i| i.to_string()),
        if s.link_ids.is_empty() {
            "-".to_string()
        } else {
            s.link_ids
                .iter()
                .map(|(i, id)| format!("{i}: {id}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!("services:    {} VIP(s), {} backend(s)", s.vips, s.backends);
    if let Some(c) = &s.cluster {
        let received = |what: &str| {
            c.received
                .iter()
                .find(|(n, _)| n == what)
                .map_or(0, |(_, v)| *v)
        };
        println!(
            "cluster:     node {}, store {} {}; published {} (dropped {}), installed {} of the others', \
             publication lag p99 {}",
            c.node,
            c.store,
            if c.up { "reachable" } else { "UNREACHABLE (going on alone)" },
            c.published,
            c.publish_dropped,
            received("installed"),
            c.lag_p99_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms"))
        );
    }
    println!("uptime:      {}s", s.uptime_seconds);
    println!(
        "{:<12} {:>12} {:>12} {:>6}",
        "TABLE", "ENTRIES", "CAPACITY", "USED"
    );
    for t in &s.tables {
        println!(
            "{:<12} {:>12} {:>12} {:>5.1}%",
            t.name,
            t.entries,
            t.capacity,
            100.0 * t.entries as f64 / t.capacity.max(1) as f64
        );
    }
    match &s.last_sweep {
        Some(w) => println!(
            "last sweep:  {:.1}s ago, took {:.3}s, deleted {}",
            w.seconds_ago,
            w.duration_seconds,
            w.deleted
                .iter()
                .map(|(t, n)| format!("{n} {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => println!("last sweep:  none yet (table occupancy is counted by the sweeps)"),
    }
    if let Some(a) = &s.announce {
        println!(
            "announce:    on {} (when {}, delay {}s, drain {}s)",
            a.interface,
            a.when.as_str(),
            a.delay_seconds,
            a.drain_seconds
        );
        for addr in &a.addresses {
            println!(
                "  {:<16} {:<10} {}",
                addr.address,
                if addr.state.announced {
                    "announced"
                } else {
                    "withdrawn"
                },
                addr.state.why
            );
        }
    }
    if !s.tls_certificates.is_empty() {
        println!("certificates:");
        let now = crate::model::tls::unix(std::time::SystemTime::now());
        for (vip, file, end) in &s.tls_certificates {
            println!(
                "  {vip}  {file}  expires {} ({} day(s) left)",
                crate::model::tls::date(*end),
                (end - now) / 86_400
            );
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

pub fn print_vips(rows: &[VipRow]) {
    let announcing = rows.iter().any(|r| r.announce.is_some());
    let w = width(rows.iter().map(|r| r.vip.spec.id.endpoint.to_string()));
    println!(
        "{:<12} {:<w$} {:<5} {:<5} {:<5} {:>12} {:>5} {:>8}{}",
        "NAME",
        "VIP",
        "PROTO",
        "MODE",
        "SCHED",
        "PERSISTENCE",
        "MASK",
        "BACKENDS",
        if announcing { "  ANNOUNCED" } else { "" }
    );
    for r in rows {
        let v = &r.vip;
        let announce = r.announce.as_ref().map_or_else(String::new, |a| {
            format!("  {} ({})", if a.announced { "yes" } else { "no" }, a.why)
        });
        let http = v.spec.mode == crate::model::services::Mode::Http;
        let mode = match (http, v.spec.tls.is_some(), v.spec.forwarding) {
            (true, true, _) => "https",
            (true, false, _) => "http",
            (false, _, crate::model::services::Forwarding::Dsr) => "dsr",
            (false, _, crate::model::services::Forwarding::Nat) => "nat",
        };
        let persistence = match (&v.spec.cookie, v.spec.persistence_timeout.is_zero()) {
            (Some(c), _) => format!("cookie:{}", c.name),
            (None, true) => "off".to_string(),
            (None, false) => secs(v.spec.persistence_timeout),
        };
        println!(
            "{:<12} {:<w$} {:<5} {:<5} {:<5} {:>12} {:>5} {:>8}{announce}",
            v.spec.name.as_deref().unwrap_or("-"),
            v.spec.id.endpoint.to_string(),
            v.spec.id.protocol.as_str(),
            mode,
            v.spec.scheduler.as_str(),
            persistence,
            if http {
                "-".to_string()
            } else {
                format!("/{}", v.spec.persistence_netmask)
            },
            v.backends.len()
        );
    }
}

/// A column's width: its longest value, at least 22 (an IPv4 endpoint).
fn width(values: impl Iterator<Item = String>) -> usize {
    values.map(|v| v.len()).max().unwrap_or(0).max(22)
}

pub fn print_backends(rows: &[BackendRow]) {
    let w = width(rows.iter().map(|r| r.vip.endpoint.to_string()));
    let wb = width(rows.iter().map(|r| r.backend.to_string()));
    println!(
        "{:<w$} {:<5} {:<wb$} {:<14} {:>6} {:>6} {:>6} {:>8} {:>11}  LAST FAILED CHECK",
        "VIP", "PROTO", "BACKEND", "STATE", "WEIGHT", "SHARE", "CONNS", "SESSIONS", "CHECKS OK/F"
    );
    for r in rows {
        println!(
            "{:<w$} {:<5} {:<wb$} {:<14} {:>6} {:>5}% {:>6} {:>8} {:>11}  {}",
            r.vip.endpoint.to_string(),
            r.vip.protocol.as_str(),
            r.backend.to_string(),
            r.state,
            r.weight,
            r.share,
            r.connections,
            r.sessions,
            r.checks
                .map_or_else(|| "-".to_string(), |(ok, failed)| format!("{ok}/{failed}")),
            r.last_error.as_deref().unwrap_or("")
        );
    }
    let mut vips: Vec<VipId> = rows.iter().map(|r| r.vip).collect();
    vips.dedup();
    for v in vips {
        let mut of_vip = rows.iter().filter(|r| r.vip == v);
        if of_vip.clone().all(|r| r.share == 0) {
            if of_vip.all(|r| r.state.starts_with("down")) {
                println!("VIP {v}: no backend up (new connections are dropped)");
            } else {
                println!("VIP {v}: no backend takes new clients (new connections are dropped)");
            }
        }
    }
}

/// `lb-ctl conns`, as a table.
pub fn print_conns(conns: &[ConnView]) {
    println!(
        "{:<22} {:<22} {:<22} {:<5} {:<16} {:>8} {:>9}",
        "CLIENT", "VIP", "BACKEND", "PROTO", "STATE", "IDLE", "EXPIRES"
    );
    for c in conns {
        println!(
            "{:<22} {:<22} {:<22} {:<5} {:<16} {:>8} {:>9}",
            c.client.to_string(),
            c.vip.to_string(),
            c.backend.to_string(),
            c.protocol.as_str(),
            if c.confirmed {
                c.state.clone()
            } else {
                format!("{}(new)", c.state)
            },
            secs(c.idle),
            secs(c.expires_in)
        );
    }
}

/// `lb-ctl sessions`, as a table.
pub fn print_sessions(sessions: &[SessionView]) {
    println!(
        "{:<20} {:<22} {:<5} {:<22} {:>9} {:>9}",
        "CLIENT", "VIP", "PROTO", "BACKEND", "TIME LEFT", "AGE"
    );
    for s in sessions {
        println!(
            "{:<20} {:<22} {:<5} {:<22} {:>9} {:>9}",
            format!("{}/{}", s.client, s.netmask),
            s.vip.to_string(),
            s.protocol.as_str(),
            s.backend
                .map_or_else(|| "(removed)".to_string(), |b| b.to_string()),
            secs(s.time_left),
            secs(s.age)
        );
    }
}
