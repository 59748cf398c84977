//! The persistence cookie of a `mode: http` VIP as the operator configures
//! it: its name and attributes, their defaults and validation, and the
//! `Set-Cookie` value they make. The cookie's value (keys, tickets) is the
//! proxy's, in `l7::cookie`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `secure`: when the cookie gets the `Secure` attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Secure {
    /// Only when the client's connection is TLS.
    #[default]
    Auto,
    True,
    False,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    #[default]
    Lax,
    Strict,
    None,
}

/// A VIP's `persistence.cookie` block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieSpec {
    pub name: String,
    /// The cookie is not honoured once unused this long (0s: never).
    #[serde(with = "humantime_serde", default = "d30m")]
    pub max_idle: Duration,
    /// ... or this long after it was issued (0s: never).
    #[serde(with = "humantime_serde", default)]
    pub max_life: Duration,
    #[serde(default = "slash")]
    pub path: String,
    /// Empty: a host-only cookie.
    #[serde(default)]
    pub domain: String,
    #[serde(default = "yes")]
    pub http_only: bool,
    #[serde(default)]
    pub secure: Secure,
    #[serde(default)]
    pub same_site: SameSite,
}

const fn d30m() -> Duration {
    Duration::from_secs(30 * 60)
}
fn slash() -> String {
    "/".into()
}
const fn yes() -> bool {
    true
}

impl CookieSpec {
    /// A cookie named `name` with the defaults of the config.
    #[must_use]
    pub fn named(name: &str) -> Self {
        Self {
            name: name.into(),
            max_idle: d30m(),
            max_life: Duration::ZERO,
            path: slash(),
            domain: String::new(),
            http_only: true,
            secure: Secure::Auto,
            same_site: SameSite::Lax,
        }
    }

    /// # Errors
    /// Naming the field (`persistence.cookie.<field>`) and what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        // RFC 6265 token characters.
        let token = |c: char| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c);
        if self.name.is_empty() || !self.name.chars().all(token) {
            return Err(format!(
                "persistence.cookie.name {:?} must be a non-empty token (letters, digits, !#$%&'*+-.^_`|~)",
                self.name
            ));
        }
        if !self.path.starts_with('/')
            || self.path.contains(';')
            || self.path.contains(char::is_whitespace)
        {
            return Err(format!(
                "persistence.cookie.path {:?} must start with '/' and contain no ';' or spaces",
                self.path
            ));
        }
        if self.domain.contains(';') || self.domain.contains(char::is_whitespace) {
            return Err(format!(
                "persistence.cookie.domain {:?} must contain no ';' or spaces",
                self.domain
            ));
        }
        if self.same_site == SameSite::None && self.secure != Secure::True {
            return Err(
                "persistence.cookie.same_site: none requires secure: true (browsers drop SameSite=None cookies without Secure)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The `Set-Cookie` value for `value`, with the configured attributes.
    #[must_use]
    pub fn set_cookie(&self, value: &str, tls: bool) -> String {
        let mut out = format!("{}={value}; Path={}", self.name, self.path);
        if !self.domain.is_empty() {
            out.push_str("; Domain=");
            out.push_str(&self.domain);
        }
        // The browser keeps it at most as long as we honour it.
        let keep = match (self.max_idle.is_zero(), self.max_life.is_zero()) {
            (true, true) => None,
            (false, true) => Some(self.max_idle),
            (true, false) => Some(self.max_life),
            (false, false) => Some(self.max_idle.min(self.max_life)),
        };
        if let Some(keep) = keep {
            out.push_str(&format!("; Max-Age={}", keep.as_secs()));
        }
        if self.http_only {
            out.push_str("; HttpOnly");
        }
        if self.secure == Secure::True || (self.secure == Secure::Auto && tls) {
            out.push_str("; Secure");
        }
        out.push_str(match self.same_site {
            SameSite::Lax => "; SameSite=Lax",
            SameSite::Strict => "; SameSite=Strict",
            SameSite::None => "; SameSite=None",
        });
        out
    }
}
