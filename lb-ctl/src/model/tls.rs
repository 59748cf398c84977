//! The `tls:` block of a `mode: http` VIP as the operator configures it
//! (certificates chosen by SNI, ALPN, the lowest TLS version), its checks,
//! and its certificates as loaded from their files: the chain, a key that
//! matches it, the names it serves and when it expires. The TLS server
//! built from them is the proxy's, in `l7::tls`.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer},
    sign::CertifiedKey,
};
use serde::{Deserialize, Serialize};

/// The ALPN protocols lb serves to clients.
pub const KNOWN_ALPN: [&str; 2] = ["h2", "http/1.1"];

/// A certificate expiring within this is warned about (`check-config`, the
/// log at every load).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A VIP's `tls:` block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// Chosen by SNI; the first is the default, also for clients that send
    /// no SNI.
    pub certificates: Vec<CertFiles>,
    /// Offered in this order of preference.
    #[serde(default = "default_alpn")]
    pub alpn: Vec<String>,
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// One certificate: PEM files of the chain (leaf first) and of its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_alpn() -> Vec<String> {
    KNOWN_ALPN.iter().map(|s| (*s).to_string()).collect()
}

/// The lowest TLS version accepted. Written `"1.2"` or `"1.3"` (a bare
/// `1.2` in YAML is read the same).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersion {
    #[default]
    V12,
    V13,
}

impl TlsVersion {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V12 => "1.2",
            Self::V13 => "1.3",
        }
    }
}

impl Serialize for TlsVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Number(n) => format!("{n:?}"),
        };
        match text.as_str() {
            "1.2" => Ok(Self::V12),
            "1.3" => Ok(Self::V13),
            "1.0" | "1.1" => Err(serde::de::Error::custom(format!(
                "tls.min_version: TLS {text} is not offered (deprecated by RFC 8996); use \"1.2\" or \"1.3\""
            ))),
            _ => Err(serde::de::Error::custom(format!(
                "tls.min_version {text:?}: expected \"1.2\" or \"1.3\""
            ))),
        }
    }
}

/// One certificate as loaded: what the TLS server serves and what the
/// metrics and checks tell of it.
#[derive(Clone, Debug)]
pub struct LoadedCert {
    /// The certificate file, as configured (metric label, messages).
    pub file: PathBuf,
    /// The DNS names it serves (subjectAltName, else the common name),
    /// lower case; `*.example.com` for a wildcard.
    pub names: Vec<String>,
    /// The end of its validity, in seconds since the Unix epoch.
    pub not_after: i64,
    pub key: Arc<CertifiedKey>,
}

impl LoadedCert {
    /// Whether it serves the server name `sni` (exactly, or through a
    /// wildcard for one label).
    #[must_use]
    pub fn serves(&self, sni: &str) -> bool {
        self.names.iter().any(|n| {
            n.eq_ignore_ascii_case(sni)
                || n.strip_prefix("*.").is_some_and(|suffix| {
                    sni.split_once('.').is_some_and(|(label, rest)| {
                        !label.is_empty() && rest.eq_ignore_ascii_case(suffix)
                    })
                })
        })
    }

    /// Seconds until it expires at `now` (negative once expired).
    #[must_use]
    pub fn expires_in(&self, now: SystemTime) -> i64 {
        self.not_after - unix(now)
    }
}

/// `t` in seconds since the Unix epoch (certificates' validity is kept so).
#[must_use]
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A Unix time as an RFC 3339 date, for messages.
#[must_use]
pub fn date(unix_seconds: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

impl TlsSpec {
    /// The checks that need no file.
    ///
    /// # Errors
    /// Naming the field (`tls.<field>`) and what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.certificates.is_empty() {
            return Err("tls.certificates: at least one certificate is needed".into());
        }
        for (i, name) in self.alpn.iter().enumerate() {
            if !KNOWN_ALPN.contains(&name.as_str()) {
                return Err(format!(
                    "tls.alpn[{i}]: {name:?} is not a protocol lb serves (known: {})",
                    KNOWN_ALPN.join(", ")
                ));
            }
            if self.alpn[..i].contains(name) {
                return Err(format!("tls.alpn[{i}]: {name:?} is listed twice"));
            }
        }
        Ok(())
    }

    /// Read every certificate and key, at `now`.
    ///
    /// # Errors
    /// Naming the field (`tls.certificates[N].cert` or `.key`) and the file:
    /// unreadable, not PEM, a key that does not match its certificate, or a
    /// certificate that expired.
    pub fn load(&self, now: SystemTime) -> Result<Vec<LoadedCert>, String> {
        self.check()?;
        self.certificates
            .iter()
            .enumerate()
            .map(|(i, files)| load_one(i, files, now))
            .collect()
    }
}

/// What deserves a warning in loaded certificates at `now`: each that
/// expires within [`EXPIRY_WARNING`].
#[must_use]
pub fn warnings(certs: &[LoadedCert], now: SystemTime) -> Vec<String> {
    certs
        .iter()
        .filter(|c| c.expires_in(now) < i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX))
        .map(|c| {
            format!(
                "certificate {} expires on {} (in {} day(s)); renew it and reload",
                c.file.display(),
                date(c.not_after),
                c.expires_in(now) / 86_400
            )
        })
        .collect()
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{field}: cannot read {}: {e}", path.display()))
}

fn load_one(i: usize, files: &CertFiles, now: SystemTime) -> Result<LoadedCert, String> {
    let cert_field = format!("tls.certificates[{i}].cert");
    let key_field = format!("tls.certificates[{i}].key");
    let pem = read(&cert_field, &files.cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_field}: {}: not PEM: {e}", files.cert.display()))?;
    let Some(leaf) = chain.first() else {
        return Err(format!(
            "{cert_field}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            files.cert.display()
        ));
    };
    let (names, not_after) =
        leaf_facts(leaf).map_err(|e| format!("{cert_field}: {}: {e}", files.cert.display()))?;
    if not_after < unix(now) {
        return Err(format!(
            "{cert_field}: {} expired on {}",
            files.cert.display(),
            date(not_after)
        ));
    }
    let key_pem = read(&key_field, &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "{key_field}: {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            files.key.display()
        )
    })?;
    let key = CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "{key_field}: {} does not match the certificate {}",
                files.key.display(),
                files.cert.display()
            ),
            e => format!("{key_field}: {}: {e}", files.key.display()),
        })?;
    Ok(LoadedCert {
        file: files.cert.clone(),
        names,
        not_after,
        key: Arc::new(key),
    })
}

/// The DNS names and the end of validity of a leaf certificate.
fn leaf_facts(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<TlsSpec, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_versions() {
        let s = spec("certificates: [{ cert: a.pem, key: a.key }]").unwrap();
        assert_eq!(s.alpn, ["h2", "http/1.1"]);
        assert_eq!(s.min_version, TlsVersion::V12);
        assert!(s.check().is_ok());
        for (text, v) in [
            ("\"1.3\"", TlsVersion::V13),
            ("1.3", TlsVersion::V13),
            ("1.2", TlsVersion::V12),
        ] {
            let s = spec(&format!(
                "certificates: [{{ cert: a, key: b }}]\nmin_version: {text}"
            ))
            .unwrap();
            assert_eq!(s.min_version, v, "{text}");
        }
        let e = spec("certificates: [{ cert: a, key: b }]\nmin_version: \"1.0\"").unwrap_err();
        assert!(e.contains("tls.min_version: TLS 1.0 is not offered"), "{e}");
        let e = spec("certificates: [{ cert: a, key: b }]\nmin_version: \"2\"").unwrap_err();
        assert!(e.contains("expected \"1.2\" or \"1.3\""), "{e}");
    }

    #[test]
    fn alpn_and_certificates_are_checked() {
        let e = spec("certificates: [{ cert: a, key: b }]\nalpn: [h2, spdy/3]")
            .unwrap()
            .check()
            .unwrap_err();
        assert!(
            e.starts_with("tls.alpn[1]: \"spdy/3\" is not a protocol"),
            "{e}"
        );
        let e = spec("certificates: [{ cert: a, key: b }]\nalpn: [h2, h2]")
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(e, "tls.alpn[1]: \"h2\" is listed twice");
        let e = spec("certificates: []").unwrap().check().unwrap_err();
        assert!(e.starts_with("tls.certificates:"), "{e}");
        assert!(spec("certificates: [{ cert: a, key: b }]\nalpn: []")
            .unwrap()
            .check()
            .is_ok());
    }

    /// A self-signed certificate for `names`, valid until `not_after`
    /// (year), written to `dir` as `<stem>.pem` and `<stem>.key`.
    fn make(dir: &Path, stem: &str, names: &[&str], until_year: i32) -> CertFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(until_year, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let files = CertFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn with(certificates: Vec<CertFiles>) -> TlsSpec {
        TlsSpec {
            certificates,
            alpn: default_alpn(),
            min_version: TlsVersion::V12,
        }
    }

    #[test]
    fn files_are_loaded_and_their_faults_named() {
        let dir = scratch("files");
        let now = SystemTime::now();
        let good = make(&dir, "shop", &["shop.test", "*.shop.test"], 2200);
        let loaded = with(vec![good.clone()]).load(now).unwrap();
        assert_eq!(loaded[0].names, ["shop.test", "*.shop.test"]);
        assert!(loaded[0].expires_in(now) > 100 * 365 * 86_400);
        assert!(warnings(&loaded, now).is_empty());
        let c = &loaded[0];
        assert!(c.serves("shop.test") && c.serves("WWW.Shop.Test"));
        assert!(!c.serves("a.b.shop.test") && !c.serves(".shop.test") && !c.serves("other.test"));

        let missing = CertFiles {
            cert: dir.join("nope.pem"),
            key: good.key.clone(),
        };
        let e = with(vec![good.clone(), missing]).load(now).unwrap_err();
        assert!(
            e.starts_with("tls.certificates[1].cert: cannot read "),
            "{e}"
        );
        assert!(e.contains("nope.pem"), "{e}");

        let other = make(&dir, "other", &["other.test"], 2200);
        let mismatched = CertFiles {
            cert: good.cert.clone(),
            key: other.key.clone(),
        };
        let e = with(vec![mismatched]).load(now).unwrap_err();
        assert!(
            e.starts_with("tls.certificates[0].key: ")
                && e.contains("does not match the certificate"),
            "{e}"
        );

        let not_a_key = CertFiles {
            cert: good.cert.clone(),
            key: good.cert.clone(),
        };
        let e = with(vec![not_a_key]).load(now).unwrap_err();
        assert!(e.contains("holds no PEM private key"), "{e}");
        let not_a_cert = CertFiles {
            cert: good.key.clone(),
            key: good.key.clone(),
        };
        let e = with(vec![not_a_cert]).load(now).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");

        let old = make(&dir, "old", &["old.test"], 2021);
        let e = with(vec![old]).load(now).unwrap_err();
        assert!(
            e.starts_with("tls.certificates[0].cert: ") && e.contains("expired on 2021-01-01"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_certificate_near_its_end_is_warned_about() {
        let dir = scratch("soon");
        let files = make(&dir, "soon", &["soon.test"], 2200);
        let loaded = with(vec![files]).load(SystemTime::now()).unwrap();
        let end = UNIX_EPOCH + Duration::from_secs(u64::try_from(loaded[0].not_after).unwrap());
        let w = warnings(&loaded, end - Duration::from_secs(3 * 86_400));
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("expires on 2200-01-01") && w[0].contains("in 3 day(s)"),
            "{w:?}"
        );
        assert!(warnings(&loaded, end - Duration::from_secs(15 * 86_400)).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
