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

fn set(key: &str, value: &str, why: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    let current = std::fs::read_to_string(&path).with_context(|| format!("reading {key}"))?;
    if current.trim() == value {
        return Ok(());
    }
    std::fs::write(&path, value).with_context(|| format!("setting {key}={value} ({why})"))?;
    log::info!("set {key}={value} ({why})");
    Ok(())
}

/// Apply the forwarding settings for the attached interfaces.
///
/// # Errors
/// Naming the setting that could not be made.
pub fn prepare_forwarding(ifaces: &[String]) -> Result<()> {
    set(
        "net.ipv4.ip_forward",
        "1",
        "the kernel forwards packets whose neighbour is unresolved",
    )?;
    set(
        "net.ipv4.conf.all.send_redirects",
        "0",
        "one-arm forwarding must not send ICMP redirects",
    )?;
    for iface in ifaces {
        if iface.contains('.') || iface.contains('/') {
            bail!("interface name {iface:?} is not valid");
        }
        set(
            &format!("net.ipv4.conf.{iface}.send_redirects"),
            "0",
            "one-arm forwarding must not send ICMP redirects",
        )?;
    }
    Ok(())
}
