//! `lb-ctl detach`: remove what a stopped controller left running.

use anyhow::{Context as _, Result};

use crate::kernel::sysctl;

/// `lb-ctl detach`: remove what a controller left running on `ifaces` (a
/// pinned attachment each), the VIP addresses it announced (`announce:`,
/// as recorded next to its control socket `socket`), and, once no
/// interface is attached any more, every table pinned under `<bpffs>/lb`
/// (of any layout). Returns what was done, a line each.
///
/// # Errors
/// When bpffs cannot be had, a pin or an announced address cannot be
/// removed.
pub fn detach(
    ifaces: &[String],
    bpffs: &std::path::Path,
    socket: &std::path::Path,
) -> Result<Vec<String>> {
    sysctl::ensure_bpffs(bpffs)?;
    let dirs = crate::kernel::pins::PinDirs::new(bpffs);
    let mut done = Vec::new();
    let withdrawn = crate::announce::forget(socket)?;
    if !withdrawn.is_empty() {
        done.push(format!(
            "withdrew the announced VIP address(es) {}",
            withdrawn
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for iface in ifaces {
        sysctl::check_iface_name(iface)?;
        let path = dirs.link(iface);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            done.push(format!("detached lb from {iface}"));
        } else {
            done.push(format!(
                "{iface}: no lb attachment pinned at {}",
                path.display()
            ));
        }
    }
    let links_left = std::fs::read_dir(&dirs.links).map_or(0, Iterator::count);
    if links_left > 0 {
        done.push(format!(
            "kept the tables in {}: {links_left} other interface(s) still attached",
            dirs.root.display()
        ));
        return Ok(done);
    }
    let _ = std::fs::remove_dir(&dirs.links);
    if let Ok(entries) = std::fs::read_dir(&dirs.root) {
        for e in entries.filter_map(std::result::Result::ok) {
            let path = e.path();
            if path.is_dir() {
                crate::kernel::program::remove_pins(&path);
                if path.exists() {
                    log::warn!("{} holds files lb does not know; left it", path.display());
                    continue;
                }
            } else if lb_common::map_names::ALL
                .iter()
                .any(|n| e.file_name().to_str() == Some(n))
            {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            } else {
                continue;
            }
            done.push(format!("removed the tables pinned at {}", path.display()));
        }
    }
    let _ = std::fs::remove_dir(&dirs.root);
    Ok(done)
}
