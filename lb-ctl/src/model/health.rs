//! A backend health check as the operator configures it: its kind, path,
//! interval, timeout, rise and fall, their defaults and validation. The
//! checks themselves run in `health`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connect succeeds.
    #[default]
    Tcp,
    /// `GET path` answers 2xx or 3xx.
    Http,
}

/// A VIP's `health_check` block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default)]
    pub kind: CheckKind,
    /// The path an http check requests.
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(with = "humantime_serde", default = "d2")]
    pub interval: Duration,
    #[serde(with = "humantime_serde", default = "d1")]
    pub timeout: Duration,
    /// Consecutive successes for a down backend to come up.
    #[serde(default = "two")]
    pub rise: u32,
    /// Consecutive failures for an up backend to go down.
    #[serde(default = "three")]
    pub fall: u32,
}

fn default_path() -> String {
    "/".into()
}
const fn d2() -> Duration {
    Duration::from_secs(2)
}
const fn d1() -> Duration {
    Duration::from_secs(1)
}
const fn two() -> u32 {
    2
}
const fn three() -> u32 {
    3
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            kind: CheckKind::default(),
            path: default_path(),
            interval: d2(),
            timeout: d1(),
            rise: two(),
            fall: three(),
        }
    }
}

impl HealthCheck {
    /// # Errors
    /// Naming the field (`health_check.<field>`) and what is wrong with it.
    pub fn validate(&self) -> Result<(), String> {
        if self.rise == 0 {
            return Err("health_check.rise must be 1 or more, not 0".into());
        }
        if self.fall == 0 {
            return Err("health_check.fall must be 1 or more, not 0".into());
        }
        if self.interval.is_zero() {
            return Err("health_check.interval must be longer than zero".into());
        }
        if self.timeout.is_zero() {
            return Err("health_check.timeout must be longer than zero".into());
        }
        if self.timeout > self.interval {
            return Err(format!(
                "health_check.timeout ({}) must not be longer than health_check.interval ({})",
                humantime::format_duration(self.timeout),
                humantime::format_duration(self.interval)
            ));
        }
        if self.kind == CheckKind::Http
            && (!self.path.starts_with('/') || self.path.chars().any(char::is_whitespace))
        {
            return Err(format!(
                "health_check.path {:?} must start with '/' and contain no spaces",
                self.path
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_checks_are_refused_naming_the_field() {
        let ok = HealthCheck::default();
        assert!(ok.validate().is_ok());
        let cases = [
            (
                HealthCheck {
                    rise: 0,
                    ..ok.clone()
                },
                "health_check.rise",
            ),
            (
                HealthCheck {
                    fall: 0,
                    ..ok.clone()
                },
                "health_check.fall",
            ),
            (
                HealthCheck {
                    interval: Duration::ZERO,
                    ..ok.clone()
                },
                "health_check.interval",
            ),
            (
                HealthCheck {
                    timeout: Duration::ZERO,
                    ..ok.clone()
                },
                "health_check.timeout",
            ),
            (
                HealthCheck {
                    timeout: Duration::from_secs(3),
                    ..ok.clone()
                },
                "must not be longer than health_check.interval",
            ),
            (
                HealthCheck {
                    kind: CheckKind::Http,
                    path: "healthz".into(),
                    ..ok.clone()
                },
                "health_check.path",
            ),
        ];
        for (check, field) in cases {
            let e = check.validate().unwrap_err();
            assert!(e.contains(field), "{field}: {e}");
        }
    }
}
