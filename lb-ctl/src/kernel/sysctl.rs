//! Host settings the data path relies on: bpffs for pinned maps, IPv4
//! forwarding (the kernel forwards rewritten packets whose next hop is not
//! resolved yet), and no ICMP redirects (one-arm forwarding sends packets
//! back out of the interface they came in on).

use std::path::Path;

use anyhow::{bail, Context as _, Result};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Make sure `dir`'s parent bpffs exists, mounting one at `/sys/fs/bpf` if
/// needed (`ip netns exec` remounts /sys without it).
///
/// # Errors
/// When no bpffs can be had.
pub fn ensure_bpffs(mount_point: &Path) -> Result<()> {
    let is_bpffs =
        |p: &Path| nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC);
    if is_bpffs(mount_point) {
        return Ok(());
    }
    std::fs::create_dir_all(mount_point)
        .with_context(|| format!("creating the bpffs mount point {}", mount_point.display()))?;
    nix::mount::mount(
        Some("bpf"),
        mount_point,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "mounting bpffs at {} (needed to pin the maps)",
            mount_point.display()
        )
    })?;
    if !is_bpffs(mount_point) {
        bail!(
            "{} is not a bpffs after mounting one there",
            mount_point.display()
        );
    }
    log::info!("mounted bpffs at {}", mount_point.display());
    Ok(())
}

/// One sysctl under `/proc/sys`, named by its components so that an
/// interface name with dots (a VLAN such as `eth0.100`) stays one component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(Vec<String>);

impl Key {
    fn new(parts: &[&str]) -> Self {
        Self(parts.iter().map(|p| (*p).to_string()).collect())
    }

    /// `net.ipv4.conf.<iface>.<name>`.
    #[must_use]
    pub fn conf(iface: &str, name: &str) -> Self {
        Self::new(&["net", "ipv4", "conf", iface, name])
    }

    fn path(&self) -> std::path::PathBuf {
        self.0
            .iter()
            .fold(Path::new("/proc/sys").to_path_buf(), |p, c| p.join(c))
    }

    fn read(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.path())
            .with_context(|| format!("reading {self}"))?
            .trim()
            .to_string())
    }
}

impl std::fmt::Display for Key {
    /// As `sysctl(8)` writes it: dots between components, and a dot inside
    /// a component (an interface name) written as a slash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|p| p.replace('.', "/")).collect();
        f.write_str(&parts.join("."))
    }
}

/// A setting lb-ctl changed, with the value it had before and the one
/// lb-ctl gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    pub key: Key,
    pub before: String,
    pub set_to: String,
}

fn set(key: &Key, value: &str, why: &str) -> Result<Option<Changed>> {
    let current = key.read()?;
    if current == value {
        return Ok(None);
    }
    std::fs::write(key.path(), value).with_context(|| format!("setting {key}={value} ({why})"))?;
    log::info!("set {key}={value} (was {current}; {why})");
    Ok(Some(Changed {
        key: key.clone(),
        before: current,
        set_to: value.to_string(),
    }))
}

/// The `rp_filter` value to give an interface so that the kernel accepts
/// packets whose source is one of the host's own addresses (`accept_local`),
/// given the current `all` and interface values: the kernel applies the
/// larger of the two, and only strict mode (1) refuses them. `None` when
/// nothing needs to change.
#[must_use]
pub const fn loose_rp_filter(all: u8, iface: u8) -> Option<u8> {
    let effective = if all > iface { all } else { iface };
    if effective == 1 {
        Some(2)
    } else {
        None
    }
}

/// Check an interface name before it becomes a path component.
///
/// # Errors
/// When it could not be an interface name.
pub fn check_iface_name(iface: &str) -> Result<()> {
    if iface.is_empty()
        || iface.len() > 15
        || iface == "."
        || iface == ".."
        || iface.contains(['/', '\0'])
        || iface.chars().any(char::is_whitespace)
    {
        bail!("interface name {iface:?} is not valid");
    }
    Ok(())
}

/// Apply the forwarding settings for the attached interfaces and return
/// the interface settings that were changed (to restore at detach).
///
/// - IPv4 forwarding: the kernel forwards a rewritten packet whose next hop
///   the data path could not resolve, and resolves the neighbour meanwhile.
/// - No ICMP redirects: one-arm forwarding sends packets back out of the
///   interface they came in on.
/// - `accept_local` (and a loose `rp_filter` where it was strict): such a
///   rewritten reply carries the VIP, an address of this host, as its
///   source; without it the kernel drops the packet as a martian and the
///   client never connects.
///
/// # Errors
/// Naming the setting that could not be made.
pub fn prepare_forwarding(ifaces: &[String]) -> Result<Vec<Changed>> {
    for iface in ifaces {
        check_iface_name(iface)?;
    }
    let mut changed = Vec::new();
    changed.extend(set(
        &Key::new(&["net", "ipv4", "ip_forward"]),
        "1",
        "the kernel forwards packets whose neighbour is unresolved",
    )?);
    changed.extend(set(
        &Key::conf("all", "send_redirects"),
        "0",
        "one-arm forwarding must not send ICMP redirects",
    )?);
    for iface in ifaces {
        changed.extend(set(
            &Key::conf(iface, "send_redirects"),
            "0",
            "one-arm forwarding must not send ICMP redirects",
        )?);
        changed.extend(set(
            &Key::conf(iface, "accept_local"),
            "1",
            "a reply whose client is not yet resolved is forwarded by the kernel with the VIP as its source",
        )?);
        let all: u8 = Key::conf("all", "rp_filter").read()?.parse().unwrap_or(0);
        let this: u8 = Key::conf(iface, "rp_filter").read()?.parse().unwrap_or(0);
        if let Some(v) = loose_rp_filter(all, this) {
            changed.extend(set(
                &Key::conf(iface, "rp_filter"),
                &v.to_string(),
                "strict reverse-path filtering refuses the VIP as a source even with accept_local",
            )?);
        }
    }
    Ok(changed)
}

/// Put back settings changed by [`prepare_forwarding`] (at detach); a
/// setting someone else changed since is theirs now, and left as it is.
pub fn restore(changed: &[Changed]) {
    for c in changed.iter().rev() {
        match c.key.read() {
            Ok(now) if now != c.set_to => {
                log::info!(
                    "left {}={now}: changed by someone else since lb set it to {}",
                    c.key,
                    c.set_to
                );
                continue;
            }
            _ => {}
        }
        match std::fs::write(c.key.path(), &c.before) {
            Ok(()) => log::info!("restored {}={}", c.key, c.before),
            Err(e) => log::warn!("restoring {}={}: {e}", c.key, c.before),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_with_dots_stay_one_component() {
        let k = Key::conf("eth0.100", "send_redirects");
        assert_eq!(
            k.path(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/send_redirects")
        );
        assert_eq!(k.to_string(), "net.ipv4.conf.eth0/100.send_redirects");
        assert!(check_iface_name("eth0.100").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "sixteen-chars-xx"] {
            assert!(check_iface_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_a_strict_reverse_path_filter_is_loosened() {
        assert_eq!(loose_rp_filter(0, 0), None);
        assert_eq!(loose_rp_filter(0, 2), None);
        assert_eq!(loose_rp_filter(2, 1), None, "all=2 already makes it loose");
        assert_eq!(loose_rp_filter(1, 0), Some(2));
        assert_eq!(loose_rp_filter(0, 1), Some(2));
        assert_eq!(loose_rp_filter(1, 1), Some(2));
    }
}
