//! What a reload of one configuration over another would change, line by
//! line, for `lb-ctl config diff FILE`: VIPs added, removed or changed,
//! backends added, removed or reweighted, and settings; a change of
//! `limits:` or `cluster:` is marked as one a reload refuses.

use std::collections::BTreeMap;

use super::{
    config::{Config, VipConfig},
    endpoint::{Endpoint, VipId},
};

fn id(v: &VipConfig) -> VipId {
    VipId {
        endpoint: Endpoint {
            addr: v.address,
            port: v.port,
        },
        protocol: v.protocol,
    }
}

/// The lines of the difference from `running` to `next` (none: nothing
/// would change). `+` adds, `-` removes, `~` changes, `!` is refused by a
/// reload (it needs a restart).
#[must_use]
pub fn diff(running: &Config, next: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let old: BTreeMap<VipId, &VipConfig> = running.vips.iter().map(|v| (id(v), v)).collect();
    let new: BTreeMap<VipId, &VipConfig> = next.vips.iter().map(|v| (id(v), v)).collect();
    for (vip, v) in &old {
        if !new.contains_key(vip) {
            out.push(format!("- VIP {vip}{}", named(v)));
        }
    }
    for (vip, v) in &new {
        match old.get(vip) {
            None => {
                out.push(format!("+ VIP {vip}{}", named(v)));
                for b in &v.backends {
                    out.push(format!(
                        "+ VIP {vip}: backend {}:{} (weight {})",
                        b.address, b.port, b.weight
                    ));
                }
            }
            Some(before) => vip_changes(*vip, before, v, &mut out),
        }
    }
    settings(running, next, &mut out);
    out
}

fn named(v: &VipConfig) -> String {
    v.name
        .as_ref()
        .map_or_else(String::new, |n| format!(" ({n})"))
}

/// The changes of one VIP: its settings (compared as written), then its
/// backends.
fn vip_changes(vip: VipId, before: &VipConfig, after: &VipConfig, out: &mut Vec<String>) {
    let settings = |v: &VipConfig| {
        let mut v = v.clone();
        v.backends.clear();
        yaml(&v)
    };
    let (a, b) = (settings(before), settings(after));
    if a != b {
        out.push(format!("~ VIP {vip}: {}", changed_lines(&a, &b).join(", ")));
    }
    let backends = |v: &VipConfig| -> BTreeMap<(std::net::IpAddr, u16), u32> {
        v.backends
            .iter()
            .map(|b| ((b.address, b.port), b.weight))
            .collect()
    };
    let (old, new) = (backends(before), backends(after));
    for ((addr, port), w) in &old {
        match new.get(&(*addr, *port)) {
            None => out.push(format!("- VIP {vip}: backend {addr}:{port}")),
            Some(n) if n != w => out.push(format!(
                "~ VIP {vip}: backend {addr}:{port} weight {w} -> {n}"
            )),
            Some(_) => {}
        }
    }
    for ((addr, port), w) in &new {
        if !old.contains_key(&(*addr, *port)) {
            out.push(format!("+ VIP {vip}: backend {addr}:{port} (weight {w})"));
        }
    }
}

/// The settings outside the VIPs.
fn settings(running: &Config, next: &Config, out: &mut Vec<String>) {
    for (name, a, b, refused) in [
        (
            "timeouts",
            yaml(&running.timeouts),
            yaml(&next.timeouts),
            false,
        ),
        (
            "sweeper",
            yaml(&running.sweeper),
            yaml(&next.sweeper),
            false,
        ),
        ("http", yaml(&running.http), yaml(&next.http), false),
        ("limits", yaml(&running.limits), yaml(&next.limits), true),
        ("cluster", yaml(&running.cluster), yaml(&next.cluster), true),
        (
            "announce",
            yaml(&running.announce),
            yaml(&next.announce),
            false,
        ),
    ] {
        if a != b {
            let (mark, why) = if refused {
                ("!", " (a reload refuses this: restart lb-ctl)")
            } else {
                ("~", "")
            };
            let changed = changed_lines(&a, &b);
            let what = if changed.is_empty() {
                "removed".to_string()
            } else {
                changed.join(", ")
            };
            out.push(format!("{mark} {name}: {what}{why}"));
        }
    }
}

/// A block of settings written as YAML, to compare and to show.
fn yaml<T: serde::Serialize>(v: &T) -> String {
    serde_yaml::to_string(v).unwrap_or_default()
}

/// The lines of `b` that `a` does not have, trimmed: what changed to what.
fn changed_lines(a: &str, b: &str) -> Vec<String> {
    b.lines()
        .filter(|l| !a.lines().any(|m| m == *l))
        .map(|l| l.trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Config {
        Config::parse(yaml, "test").unwrap().0
    }

    #[test]
    fn a_reload_s_changes_are_listed() {
        let running = parse(
            "vips:\n  - { name: web, address: 198.18.0.100, port: 80, backends: [ { address: 198.18.1.11, port: 8080 }, { address: 198.18.1.12, port: 8080 } ] }\n  - { address: 198.18.0.100, port: 81 }\n",
        );
        assert!(diff(&running, &running).is_empty());
        let next = parse(
            "vips:\n  - { name: web, address: 198.18.0.100, port: 80, scheduler: wrr, backends: [ { address: 198.18.1.11, port: 8080, weight: 3 }, { address: 198.18.1.13, port: 8080 } ] }\n  - { address: 198.18.0.100, port: 82, protocol: udp }\ntimeouts: { udp: 60s }\nlimits: { max_connections: 10 }\n",
        );
        let lines = diff(&running, &next);
        assert_eq!(
            lines,
            [
                "- VIP 198.18.0.100:81/tcp",
                "~ VIP 198.18.0.100:80/tcp: scheduler: wrr",
                "~ VIP 198.18.0.100:80/tcp: backend 198.18.1.11:8080 weight 1 -> 3",
                "- VIP 198.18.0.100:80/tcp: backend 198.18.1.12:8080",
                "+ VIP 198.18.0.100:80/tcp: backend 198.18.1.13:8080 (weight 1)",
                "+ VIP 198.18.0.100:82/udp",
                "~ timeouts: udp: 1m",
                "! limits: max_connections: 10 (a reload refuses this: restart lb-ctl)",
            ],
            "{lines:#?}"
        );
    }
}
