//! The persistence cookie of `mode: http` VIPs: what it carries, how it is
//! authenticated, and when it is honoured. Pure, tested here; the proxy
//! only calls it.
//!
//! A cookie value is `base64url(version ‖ backend id ‖ issued ‖ last used ‖
//! tag)`: version 1 (1 byte), the backend's id (8 bytes, a keyed hash of
//! its address and port: stable across restarts and hosts sharing the key,
//! and revealing no address), the issue and last-use times (seconds since
//! the Unix epoch, 4 bytes each), and the first 16 bytes of
//! HMAC-SHA-256 over the rest and the cookie's name. 44 characters.

use std::path::Path;

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::model::{cookie::CookieSpec, endpoint::Endpoint};

const VERSION: u8 = 1;
const TAG: usize = 16;
const BODY: usize = 1 + 8 + 4 + 4;
/// Length of a key, in bytes.
pub const KEY_LEN: usize = 32;

/// The keys: the current one signs, the previous one is still accepted
/// (rotation: write a new current key, keep the old as previous).
#[derive(Clone)]
pub struct Keys {
    current: [u8; KEY_LEN],
    previous: Option<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(…)")
    }
}

impl Keys {
    #[must_use]
    pub const fn new(current: [u8; KEY_LEN], previous: Option<[u8; KEY_LEN]>) -> Self {
        Self { current, previous }
    }

    /// Read the key file: one key per line, 64 hex digits, the current key
    /// first and optionally the previous one. A missing file is created
    /// (mode 0600) with a random key.
    ///
    /// # Errors
    /// Naming the file and what is wrong with it.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        let name = path.display();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_LEN];
                getrandom::fill(&mut key)
                    .map_err(|e| format!("http.cookie_key_file {name}: no random key: {e}"))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("http.cookie_key_file {name}: {e}"))?;
                }
                let line = format!("{}\n", hex(&key));
                write_private(path, &line)
                    .map_err(|e| format!("http.cookie_key_file {name}: {e}"))?;
                log::info!("created the cookie key file {name} with a random key");
                line
            }
            Err(e) => return Err(format!("http.cookie_key_file {name}: cannot read it: {e}")),
        };
        let keys: Vec<[u8; KEY_LEN]> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
            .map(|(i, l)| {
                unhex(l).ok_or_else(|| {
                    format!(
                        "http.cookie_key_file {name}: key {} is not {} hex digits",
                        i + 1,
                        KEY_LEN * 2
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        match keys.as_slice() {
            [current] => Ok(Self::new(*current, None)),
            [current, previous] => Ok(Self::new(*current, Some(*previous))),
            [] => Err(format!("http.cookie_key_file {name}: holds no key")),
            _ => Err(format!(
                "http.cookie_key_file {name}: holds {} keys; at most two (current, previous)",
                keys.len()
            )),
        }
    }

    /// A backend's id in cookies: a keyed hash of its address and port.
    #[must_use]
    pub fn backend_id(&self, backend: Endpoint) -> [u8; 8] {
        let tag = mac(&self.current, b"backend", backend.to_string().as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&tag[..8]);
        id
    }

    /// The cookie value naming `backend`, issued at `issued` and last used
    /// at `now` (seconds since the epoch).
    #[must_use]
    pub fn issue(&self, name: &str, backend: Endpoint, issued: u32, now: u32) -> String {
        self.issue_for(name, self.backend_id(backend), issued, now)
    }

    /// [`Keys::issue`] for a backend id already known.
    #[must_use]
    pub fn issue_for(&self, name: &str, backend_id: [u8; 8], issued: u32, now: u32) -> String {
        let mut raw = Vec::with_capacity(BODY + TAG);
        raw.push(VERSION);
        raw.extend_from_slice(&backend_id);
        raw.extend_from_slice(&issued.to_be_bytes());
        raw.extend_from_slice(&now.to_be_bytes());
        let tag = mac(&self.current, name.as_bytes(), &raw);
        raw.extend_from_slice(&tag[..TAG]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// Read a cookie value: its backend id and times, if it is ours and
    /// untampered (under the current or the previous key). A cookie under
    /// the previous key names backends by that key's ids: it is re-read
    /// with the current key's ids by the caller through `backend_id_prev`.
    #[must_use]
    pub fn read(&self, name: &str, value: &str) -> Option<Ticket> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value.trim())
            .ok()?;
        if raw.len() != BODY + TAG || raw[0] != VERSION {
            return None;
        }
        let (body, tag) = raw.split_at(BODY);
        // The MAC crate's own verification: constant time.
        let by = |key: &[u8; KEY_LEN]| {
            mac_of(key, name.as_bytes(), body)
                .verify_truncated_left(tag)
                .is_ok()
        };
        let previous = if by(&self.current) {
            false
        } else if self.previous.as_ref().is_some_and(by) {
            true
        } else {
            return None;
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&body[1..9]);
        Some(Ticket {
            backend: id,
            under_previous_key: previous,
            issued: u32::from_be_bytes([body[9], body[10], body[11], body[12]]),
            last_used: u32::from_be_bytes([body[13], body[14], body[15], body[16]]),
        })
    }

    /// A backend's id under the previous key (for cookies it signed).
    #[must_use]
    pub fn previous_backend_id(&self, backend: Endpoint) -> Option<[u8; 8]> {
        let key = self.previous.as_ref()?;
        let tag = mac(key, b"backend", backend.to_string().as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&tag[..8]);
        Some(id)
    }
}

/// What a valid cookie says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub backend: [u8; 8],
    pub under_previous_key: bool,
    pub issued: u32,
    pub last_used: u32,
}

impl Ticket {
    /// Whether the cookie is still honoured at `now`.
    #[must_use]
    pub fn honoured(&self, spec: &CookieSpec, now: u32) -> bool {
        let idle = u64::from(now.saturating_sub(self.last_used));
        let age = u64::from(now.saturating_sub(self.issued));
        (spec.max_idle.is_zero() || idle < spec.max_idle.as_secs())
            && (spec.max_life.is_zero() || age < spec.max_life.as_secs())
    }

    /// Whether the cookie should be re-issued with a fresh last-use time
    /// (at most every minute, and well within `max_idle`).
    #[must_use]
    pub fn needs_refresh(&self, spec: &CookieSpec, now: u32) -> bool {
        if spec.max_idle.is_zero() {
            return false;
        }
        let every = (spec.max_idle.as_secs() / 4).clamp(1, 60);
        u64::from(now.saturating_sub(self.last_used)) >= every
    }
}

/// HMAC-SHA-256 over `data` in `domain`, ready to finalize or verify.
fn mac_of(key: &[u8; KEY_LEN], domain: &[u8], data: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).expect("any key length");
    m.update(&(domain.len() as u32).to_be_bytes());
    m.update(domain);
    m.update(data);
    m
}

fn mac(key: &[u8; KEY_LEN], domain: &[u8], data: &[u8]) -> [u8; 32] {
    mac_of(key, domain, data).finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; KEY_LEN]> {
    if s.len() != KEY_LEN * 2 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// Seconds since the Unix epoch (cookie times are wall-clock: several hosts
/// and restarts must agree on them).
#[must_use]
pub fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::cookie::{SameSite, Secure};

    fn spec() -> CookieSpec {
        CookieSpec {
            name: "SRVID".into(),
            max_idle: Duration::from_secs(1800),
            max_life: Duration::ZERO,
            path: "/".into(),
            domain: String::new(),
            http_only: true,
            secure: Secure::Auto,
            same_site: SameSite::Lax,
        }
    }

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap()
    }

    #[test]
    fn a_cookie_names_its_backend_and_resists_tampering() {
        let keys = Keys::new([7; KEY_LEN], None);
        let b = ep("198.18.1.11:8080");
        let v = keys.issue("SRVID", b, 1000, 1000);
        assert_eq!(v.len(), 44);
        assert!(!v.contains("198"), "no address in the cookie");
        let t = keys.read("SRVID", &v).unwrap();
        assert_eq!(t.backend, keys.backend_id(b));
        assert_ne!(t.backend, keys.backend_id(ep("198.18.1.12:8080")));
        assert_eq!((t.issued, t.last_used), (1000, 1000));
        // Any flipped character, another name, another key: not ours.
        for i in 0..v.len() {
            let mut bytes = v.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(keys.read("SRVID", &tampered).is_none(), "position {i}");
        }
        assert!(keys.read("OTHER", &v).is_none());
        assert!(Keys::new([8; KEY_LEN], None).read("SRVID", &v).is_none());
        assert!(keys.read("SRVID", "garbage").is_none());
        // Two hosts with the same key agree.
        assert_eq!(Keys::new([7; KEY_LEN], None).read("SRVID", &v), Some(t));
    }

    #[test]
    fn rotation_accepts_the_previous_key() {
        let old = Keys::new([1; KEY_LEN], None);
        let v = old.issue("SRVID", ep("198.18.1.11:8080"), 5, 5);
        let rotated = Keys::new([2; KEY_LEN], Some([1; KEY_LEN]));
        let t = rotated.read("SRVID", &v).unwrap();
        assert!(t.under_previous_key);
        assert_eq!(
            Some(t.backend),
            rotated.previous_backend_id(ep("198.18.1.11:8080"))
        );
    }

    #[test]
    fn idle_and_life_limits() {
        let mut s = spec();
        s.max_idle = Duration::from_secs(100);
        s.max_life = Duration::from_secs(1000);
        let t = Ticket {
            backend: [0; 8],
            under_previous_key: false,
            issued: 10_000,
            last_used: 10_500,
        };
        assert!(t.honoured(&s, 10_599));
        assert!(!t.honoured(&s, 10_600), "idle 100 s");
        let busy = Ticket {
            last_used: 10_990,
            ..t
        };
        assert!(!busy.honoured(&s, 11_000), "1000 s old, busy or not");
        s.max_idle = Duration::ZERO;
        s.max_life = Duration::ZERO;
        assert!(t.honoured(&s, u32::MAX), "0s: never");
        assert!(!t.needs_refresh(&s, u32::MAX));
        s.max_idle = Duration::from_secs(1800);
        assert!(!t.needs_refresh(&s, 10_559));
        assert!(t.needs_refresh(&s, 10_560));
    }

    #[test]
    fn attributes_as_configured_and_bad_specs_refused() {
        let mut s = spec();
        assert_eq!(
            s.set_cookie("v", false),
            "SRVID=v; Path=/; Max-Age=1800; HttpOnly; SameSite=Lax"
        );
        assert!(s.set_cookie("v", true).contains("; Secure"));
        s.domain = "shop.example".into();
        s.secure = Secure::True;
        s.same_site = SameSite::None;
        s.http_only = false;
        s.max_idle = Duration::ZERO;
        assert_eq!(
            s.set_cookie("v", false),
            "SRVID=v; Path=/; Domain=shop.example; Secure; SameSite=None"
        );
        assert!(s.validate().is_ok());
        for (bad, field) in [
            (
                CookieSpec {
                    name: String::new(),
                    ..spec()
                },
                "persistence.cookie.name",
            ),
            (
                CookieSpec {
                    name: "a b".into(),
                    ..spec()
                },
                "persistence.cookie.name",
            ),
            (
                CookieSpec {
                    path: "x".into(),
                    ..spec()
                },
                "persistence.cookie.path",
            ),
            (
                CookieSpec {
                    same_site: SameSite::None,
                    ..spec()
                },
                "requires secure: true",
            ),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn key_files_are_created_read_and_refused_naming_the_problem() {
        let dir = std::env::temp_dir().join(format!("lb-cookie-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("cookie.key");
        let created = Keys::load_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = Keys::load_or_create(&path).unwrap();
        assert_eq!(created.current, again.current, "kept across restarts");
        std::fs::write(&path, "zz\n").unwrap();
        let e = Keys::load_or_create(&path).unwrap_err();
        assert!(
            e.contains("http.cookie_key_file") && e.contains("not 64 hex digits"),
            "{e}"
        );
        std::fs::write(
            &path,
            format!(
                "{}\n{}\n{}\n",
                "a".repeat(64),
                "b".repeat(64),
                "c".repeat(64)
            ),
        )
        .unwrap();
        assert!(Keys::load_or_create(&path)
            .unwrap_err()
            .contains("at most two"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
