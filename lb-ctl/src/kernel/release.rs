//! The oldest kernel lb runs on, and the check of the running one.
//!
//! Linux 5.12 is the first with everything the data path uses: BPF atomic
//! fetch-and-add (5.12, the round-robin cursor), BPF ring buffers (5.8,
//! the cluster's announcements) and XDP through a `bpf_link` (5.9, the
//! takeover without a gap).

/// The oldest kernel release lb runs on.
pub const MINIMUM: (u32, u32) = (5, 12);

/// The (major, minor) of a kernel release string such as
/// `6.18.44-fc-v595` or `5.15.0-91-generic`.
#[must_use]
pub fn parse(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Refuse a kernel older than [`MINIMUM`] (or one whose release cannot be
/// read), saying why.
///
/// # Errors
/// Naming the running release and what is missing.
pub fn check(release: &str) -> Result<(), String> {
    let (want_major, want_minor) = MINIMUM;
    match parse(release) {
        Some(v) if v >= MINIMUM => Ok(()),
        Some(_) => Err(format!(
            "this kernel is Linux {release}; lb needs Linux {want_major}.{want_minor} or later \
             (BPF atomic fetch-and-add, BPF ring buffers, XDP through bpf_link); upgrade the kernel"
        )),
        None => Err(format!(
            "cannot tell the kernel's version from its release {release:?}; lb needs Linux \
             {want_major}.{want_minor} or later"
        )),
    }
}

/// Check the running kernel.
///
/// # Errors
/// As [`check`].
pub fn check_running() -> Result<(), String> {
    let uts = nix::sys::utsname::uname().map_err(|e| format!("uname: {e}"))?;
    check(&uts.release().to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_compared_by_major_and_minor() {
        assert_eq!(parse("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse("5.12"), Some((5, 12)));
        assert_eq!(parse("linux"), None);
        assert!(check("6.18.44-fc-v595").is_ok());
        assert!(check("5.12.0").is_ok());
        let e = check("5.10.0-28-amd64").unwrap_err();
        assert!(
            e.contains("Linux 5.10.0-28-amd64") && e.contains("5.12 or later"),
            "{e}"
        );
        assert!(check("4.19.0").is_err());
        assert!(check("weird").unwrap_err().contains("cannot tell"));
    }
}
