//! A test certificate authority (rcgen) for the HTTPS tests and the
//! benchmark: a CA whose certificate clients trust through `--cacert`, and
//! server certificates it issues, written as PEM files as an operator's
//! would be.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA: its certificate is at [`TestCa::cert`].
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    /// The CA certificate (PEM), for clients.
    pub cert: PathBuf,
}

/// A server certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named "lb test CA", its certificate written to `dir`.
    ///
    /// # Errors
    /// When the key cannot be made or the file written.
    pub fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "lb test CA");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key)?;
        let path = dir.join("ca.pem");
        std::fs::write(&path, cert.pem()).with_context(|| path.display().to_string())?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
            cert: path,
        })
    }

    /// Issue a certificate for `names` (the first also its common name),
    /// with `organization` in its subject (to tell two apart), written as
    /// `<stem>.pem` (leaf, then the CA) and `<stem>.key`.
    ///
    /// # Errors
    /// When the key cannot be made or the files written.
    pub fn issue(&self, stem: &str, names: &[&str], organization: &str) -> Result<ServerCert> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_string()).collect::<Vec<_>>())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().copied().unwrap_or(stem));
        dn.push(DnType::OrganizationName, organization);
        params.distinguished_name = dn;
        let cert = params.signed_by(&key, &self.issuer)?;
        let out = ServerCert {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        };
        let ca = std::fs::read_to_string(&self.cert)?;
        // Written next to the final name, then renamed: a reader never
        // sees half a file.
        for (path, text) in [
            (&out.cert, format!("{}{ca}", cert.pem())),
            (&out.key, key.serialize_pem()),
        ] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).with_context(|| tmp.display().to_string())?;
            std::fs::rename(&tmp, path).with_context(|| path.display().to_string())?;
        }
        Ok(out)
    }
}
