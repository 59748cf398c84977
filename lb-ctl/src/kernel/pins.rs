//! What lb keeps in bpffs, and the checks before any of it is reused.
//!
//! ```text
//! <bpffs>/lb/v<LAYOUT_VERSION>/<MAP>   the maps (VIPS, CONNS, SESSIONS, …)
//! <bpffs>/lb/links/<IFACE>             the XDP attachment of each interface
//! ```
//!
//! The links keep the program attached while no controller runs; the maps
//! keep connections and sessions. A new `lb-ctl attach` reuses both, but
//! only when the pinned maps are what this build expects: the layout
//! version in the directory name, then each map's type, key size, value
//! size and capacity (the kernel and aya would otherwise reuse a pin of any
//! shape). Anything else is refused with what differs and how to proceed.

use std::path::{Path, PathBuf};

use lb_common::{map_names as names, LAYOUT_VERSION};

/// The pin directories under one bpffs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDirs {
    /// `<bpffs>/lb`
    pub root: PathBuf,
    /// `<bpffs>/lb/v<LAYOUT_VERSION>`
    pub maps: PathBuf,
    /// `<bpffs>/lb/links`
    pub links: PathBuf,
}

impl PinDirs {
    #[must_use]
    pub fn new(bpffs: &Path) -> Self {
        let root = bpffs.join("lb");
        Self {
            maps: root.join(format!("v{LAYOUT_VERSION}")),
            links: root.join("links"),
            root,
        }
    }

    /// Where the attachment of `iface` is pinned.
    #[must_use]
    pub fn link(&self, iface: &str) -> PathBuf {
        self.links.join(iface)
    }
}

/// Where the lock of the tables under `bpffs` lives: one controller at a
/// time may own them (a second one would take the links over from under
/// the first).
#[must_use]
pub fn lock_path(bpffs: &Path) -> PathBuf {
    let canonical = std::fs::canonicalize(bpffs).unwrap_or_else(|_| bpffs.to_path_buf());
    let name: String = canonical
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from("/run/lock/lb").join(format!("{name}.lock"))
}

/// Take the lock of the tables under `bpffs` for as long as the returned
/// value lives; it records `owner` (pid and socket) for the refusal of the
/// next one.
///
/// # Errors
/// When another controller holds it (naming it), or the lock file cannot be
/// had.
pub fn lock(bpffs: &Path, owner: &str) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use std::io::{Read as _, Seek as _, Write as _};
    let path = lock_path(bpffs);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0)?;
            lock.rewind()?;
            writeln!(lock, "{owner}")?;
            Ok(lock)
        }
        Err((mut file, _)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            anyhow::bail!(
                "another lb-ctl attach ({}) owns the tables in {}; stop it first (SIGTERM), \
                 or talk to it through its control socket",
                holder.trim(),
                PinDirs::new(bpffs).root.display()
            )
        }
    }
}

/// The maps whose type, key and value layout v5 (the layout before the
/// fixed tables of the new-flow path) shares with this build's layout: an
/// attach over a v5 data path keeps them — the services, the connections,
/// the sessions and the traffic counters.
pub const KEPT_FROM_V5: [&str; 12] = [
    names::VIPS,
    names::BACKENDS,
    names::RING,
    names::CURSORS,
    names::CONNS,
    names::SESSIONS,
    names::TX_PORTS,
    names::VIP_STATS,
    names::BACKEND_STATS,
    names::MAGLEV,
    names::ICMP_STATS,
    names::ADDR_FILTER,
];

/// The maps layout v6 (the layout before the IPv6 tables) shares with
/// this build's: all but the outcome counters (`REASONS`, two slots more).
pub const KEPT_FROM_V6: [&str; 15] = [
    names::VIPS,
    names::BACKENDS,
    names::RING,
    names::CURSORS,
    names::CONNS,
    names::SESSIONS,
    names::SETTINGS,
    names::TX_PORTS,
    names::VIP_STATS,
    names::BACKEND_STATS,
    names::HALF_OPEN,
    names::PENDING,
    names::MAGLEV,
    names::ICMP_STATS,
    names::ADDR_FILTER,
];

/// The earlier layouts an attach upgrades from, newest first, with the
/// maps each shares with this build's.
const UPGRADES: [(u32, &[&str]); 2] = [(6, &KEPT_FROM_V6), (5, &KEPT_FROM_V5)];

/// Move the tables an earlier build (layout v6 or v5) pinned in
/// `<root>/v<N>` into `maps` (this build's directory, still empty), so that
/// the takeover keeps them; the maps this build lays out differently are
/// unpinned and created afresh. Returns the layout and the maps moved, or
/// `None` when there is no earlier directory to upgrade from.
///
/// # Errors
/// When a pin cannot be moved.
pub fn upgrade(root: &Path, maps: &Path) -> std::io::Result<Option<(u32, Vec<&'static str>)>> {
    let ours_empty = std::fs::read_dir(maps).map_or(true, |mut d| d.next().is_none());
    if LAYOUT_VERSION != 7 || !ours_empty {
        return Ok(None);
    }
    for (version, kept) in UPGRADES {
        let old = root.join(format!("v{version}"));
        if !old.is_dir() {
            continue;
        }
        let mut moved = Vec::new();
        for name in kept {
            if old.join(name).exists() {
                std::fs::rename(old.join(name), maps.join(name))?;
                moved.push(*name);
            }
        }
        // What is left goes; the running program keeps its own references
        // until it is replaced.
        if let Ok(dir) = std::fs::read_dir(&old) {
            for e in dir.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        std::fs::remove_dir(&old)?;
        return Ok(Some((version, moved)));
    }
    Ok(None)
}

/// The shape of one map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PinError {
    #[error(
        "{found} holds tables of another lb build (layout {other}); this build uses layout \
         v{LAYOUT_VERSION} and cannot reuse them. To proceed, stop the balancer with the build \
         that made them, or run `lb-ctl detach IFACE...` (this drops its live connections and \
         sessions) and attach again"
    )]
    OtherLayout { found: String, other: String },
}

/// Refuse when `<bpffs>/lb` holds pins of another layout. `entries` are
/// the names found in it.
///
/// # Errors
/// Naming the foreign layout.
pub fn check_layout(root: &Path, entries: &[String]) -> Result<(), PinError> {
    let ours = format!("v{LAYOUT_VERSION}");
    for e in entries {
        if *e == ours || e == "links" {
            continue;
        }
        let other = if names::ALL.contains(&e.as_str()) {
            "v1, maps pinned directly in this directory".to_string()
        } else if e.starts_with('v') && e[1..].chars().all(|c| c.is_ascii_digit()) {
            e.clone()
        } else {
            continue;
        };
        return Err(PinError::OtherLayout {
            found: root.display().to_string(),
            other,
        });
    }
    Ok(())
}

/// What differs between a pinned map and the expected one (`None`: they
/// agree).
#[must_use]
pub fn shape_difference(have: &MapShape, want: &MapShape) -> Option<String> {
    let fields = [
        ("map type ", have.map_type, want.map_type, ""),
        ("key size ", have.key_size, want.key_size, " bytes"),
        ("value size ", have.value_size, want.value_size, " bytes"),
        ("", have.max_entries, want.max_entries, " entries"),
    ];
    let diffs: Vec<String> = fields
        .iter()
        .filter(|(_, h, w, _)| h != w)
        .map(|(what, h, w, unit)| {
            let build = if unit.ends_with("entries") {
                "this build and config"
            } else {
                "this build"
            };
            format!("{what}{h}{unit} ({build}: {w})")
        })
        .collect();
    (!diffs.is_empty()).then(|| diffs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_of_layout_v6_move_in_and_the_counters_go() {
        let root = std::env::temp_dir().join(format!("lb-pins-v6-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (old, ours) = (root.join("v6"), root.join(format!("v{LAYOUT_VERSION}")));
        std::fs::create_dir_all(&old).unwrap();
        std::fs::create_dir_all(&ours).unwrap();
        for name in KEPT_FROM_V6.iter().chain(&[names::REASONS]) {
            std::fs::write(old.join(name), name).unwrap();
        }
        let (version, moved) = upgrade(&root, &ours).unwrap().unwrap();
        assert_eq!((version, moved), (6, KEPT_FROM_V6.to_vec()));
        assert!(!ours.join(names::REASONS).exists());
        assert!(!old.exists(), "the v6 directory is gone");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_tables_of_layout_v5_move_in_and_the_rest_goes() {
        let root = std::env::temp_dir().join(format!("lb-pins-v5-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (old, ours) = (root.join("v5"), root.join(format!("v{LAYOUT_VERSION}")));
        std::fs::create_dir_all(&old).unwrap();
        std::fs::create_dir_all(&ours).unwrap();
        for name in names::ALL {
            std::fs::write(old.join(name), name).unwrap();
        }
        let (version, moved) = upgrade(&root, &ours).unwrap().unwrap();
        assert_eq!((version, moved), (5, KEPT_FROM_V5.to_vec()));
        for name in names::ALL {
            assert_eq!(
                ours.join(name).exists(),
                KEPT_FROM_V5.contains(&name),
                "{name}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(ours.join("CONNS")).unwrap(),
            "CONNS"
        );
        assert!(!old.exists(), "the v5 directory is gone");
        // Nothing to do a second time, nor over tables of this layout.
        assert_eq!(upgrade(&root, &ours).unwrap(), None);
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("CONNS"), "old").unwrap();
        assert_eq!(upgrade(&root, &ours).unwrap(), None);
        assert_eq!(
            std::fs::read_to_string(ours.join("CONNS")).unwrap(),
            "CONNS"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn other_layouts_are_named() {
        let root = Path::new("/sys/fs/bpf/lb");
        let current = format!("v{LAYOUT_VERSION}");
        assert!(check_layout(root, &[current, "links".into()]).is_ok());
        let e = check_layout(root, &["CONNS".into()]).unwrap_err();
        assert!(e.to_string().contains("layout v1"), "{e}");
        let e = check_layout(root, &["v2".into()]).unwrap_err();
        assert!(e.to_string().contains("layout v2"), "{e}");
        assert!(e.to_string().contains("lb-ctl detach"), "{e}");
        // Unrelated files are not ours to judge.
        assert!(check_layout(root, &["notes".into()]).is_ok());
    }

    #[test]
    fn shape_differences_are_spelt_out() {
        let want = MapShape {
            map_type: 1,
            key_size: 16,
            value_size: 48,
            max_entries: 2000,
        };
        assert_eq!(shape_difference(&want, &want), None);
        let have = MapShape {
            value_size: 8,
            ..want
        };
        assert_eq!(
            shape_difference(&have, &want).unwrap(),
            "value size 8 bytes (this build: 48)"
        );
        let have = MapShape {
            map_type: 2,
            key_size: 4,
            ..want
        };
        let d = shape_difference(&have, &want).unwrap();
        assert!(d.contains("map type 2") && d.contains("key size 4"), "{d}");
    }
}
