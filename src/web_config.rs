//! `--web.config.file`: TLS and basic authentication for the HTTP server, in the format of the
//! Prometheus exporter toolkit, so one file serves pgkpi and the other exporters of a host.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/pgkpi/tls.crt     # PEM, the chain with the server certificate first
//!   key_file: /etc/pgkpi/tls.key      # PEM, PKCS#8, PKCS#1 or SEC1
//! basic_auth_users:
//!   prometheus: $2y$10$...            # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! Every path is protected, `/healthz` included, as the toolkit does. The certificate is read
//! again when its files change (renewals need no restart); the users are read at start. The toolkit's other keys
//! (client certificates, cipher and version pinning, extra headers) are rejected by name
//! rather than ignored: a setting that silently does nothing is a security hole.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde::Deserialize;

/// The file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfigFile {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// What the server needs: a TLS acceptor and a password check, each when configured.
#[derive(Clone, Default)]
pub struct WebSecurity {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub auth: Option<Arc<BasicAuth>>,
}

impl WebSecurity {
    /// Reads and checks the file; the error names the file, the key and the fix.
    pub fn load(path: &Path) -> Result<WebSecurity, String> {
        let at = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("web config file {at}: cannot read it: {e}"))?;
        let file: WebConfigFile = if text.trim().is_empty() {
            WebConfigFile::default()
        } else {
            config::Config::builder()
                .add_source(config::File::from_str(&text, config::FileFormat::Yaml))
                .build()
                .and_then(|c| c.try_deserialize())
                .map_err(|e| {
                    format!(
                        "web config file {at}: {e}; pgkpi supports tls_server_config (cert_file, \
                         key_file) and basic_auth_users"
                    )
                })?
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = file
            .tls_server_config
            .map(|t| acceptor(&base.join(&t.cert_file), &base.join(&t.key_file)))
            .transpose()
            .map_err(|e| format!("web config file {at}: tls_server_config: {e}"))?;
        let auth = if file.basic_auth_users.is_empty() {
            None
        } else {
            for (user, hash) in &file.basic_auth_users {
                if user.contains(':') || user.is_empty() {
                    return Err(format!(
                        "web config file {at}: basic_auth_users: \"{user}\" is not a user name (no ':', not empty)"
                    ));
                }
                if hash.parse::<bcrypt::HashParts>().is_err() {
                    return Err(format!(
                        "web config file {at}: basic_auth_users.{user}: not a bcrypt hash; make one \
                         with htpasswd -nBC 10 \"\" | tr -d ':\\n'"
                    ));
                }
            }
            Some(Arc::new(BasicAuth {
                users: file.basic_auth_users,
                verified: Mutex::new(HashSet::new()),
            }))
        };
        Ok(WebSecurity { tls, auth })
    }
}

fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = ReloadingCert::load(cert, key, provider.clone())?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The server's certificate, read again when its files change: certificates are renewed every
/// few weeks (cert-manager, ACME), and an exporter that kept serving the old one would fail
/// every scrape once it expires. Each handshake compares the files' modification times (two
/// stats); a renewal that cannot be read or does not match its key is logged and the current
/// identity kept, so a half-written renewal never takes the endpoint down.
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: Mutex<(Stamp, Arc<rustls::sign::CertifiedKey>)>,
}

/// Modification times of the certificate and key files.
type Stamp = (Option<std::time::SystemTime>, Option<std::time::SystemTime>);

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl ReloadingCert {
    fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<ReloadingCert, String> {
        let stamp = stamp(cert, key);
        let identity = read_identity(cert, key, &provider)?;
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: Mutex::new((stamp, Arc::new(identity))),
        })
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let now = stamp(&self.cert, &self.key);
        let mut current = self.current.lock().unwrap();
        if now != current.0 {
            current.0 = now;
            match read_identity(&self.cert, &self.key, &self.provider) {
                Ok(identity) => {
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    current.1 = Arc::new(identity);
                }
                Err(error) => tracing::warn!(
                    cert = %self.cert.display(),
                    error = %error,
                    "TLS certificate changed but cannot be used; still serving the previous one"
                ),
            }
        }
        Some(current.1.clone())
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn read_identity(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<rustls::sign::CertifiedKey, String> {
    let pem = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let certs = rustls_pemfile::certs(&mut pem(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert_file {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "cert_file {}: no PEM certificate in it",
            cert.display()
        ));
    }
    let key = rustls_pemfile::private_key(&mut pem(key)?.as_slice())
        .map_err(|e| format!("key_file {}: {e}", key.display()))?
        .ok_or_else(|| format!("key_file {}: no PEM private key in it", key.display()))?;
    rustls::sign::CertifiedKey::from_der(certs, key, provider)
        .map_err(|e| format!("the certificate and key do not make a server identity: {e}"))
}

/// Users and their bcrypt hashes.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Digests of credentials already verified: bcrypt costs tens of milliseconds by design,
    /// too much for every scrape. Only digests are kept, never the passwords.
    verified: Mutex<HashSet<Vec<u8>>>,
}

/// Most remembered credentials; past it the memory starts over (a client trying passwords
/// cannot grow it, only successes are kept).
const MAX_VERIFIED: usize = 64;

impl BasicAuth {
    /// True when the `Authorization` header carries a known user and the right password.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let Some(hash) = self.users.get(&user) else {
            return false;
        };
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{user}\0{password}\0{hash}").as_bytes(),
        )
        .as_ref()
        .to_vec();
        if self.verified.lock().unwrap().contains(&digest) {
            return true;
        }
        if !bcrypt::verify(&password, hash).unwrap_or(false) {
            return false;
        }
        let mut verified = self.verified.lock().unwrap();
        if verified.len() >= MAX_VERIFIED {
            verified.clear();
        }
        verified.insert(digest);
        true
    }
}

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pgkpi-webcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn header(user: &str, password: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
        .into_bytes()
    }

    #[test]
    fn basic_auth_checks_user_and_password() {
        let hash = bcrypt::hash("s3cret:with colon", 4).unwrap();
        let path = write(
            "auth.yml",
            &format!("basic_auth_users:\n  Prom: '{hash}'\n"),
        );
        let security = WebSecurity::load(&path).unwrap();
        assert!(security.tls.is_none());
        let auth = security.auth.unwrap();
        assert!(auth.allows(Some(&header("Prom", "s3cret:with colon"))));
        // Again, from the memory of verified credentials.
        assert!(auth.allows(Some(&header("Prom", "s3cret:with colon"))));
        assert!(!auth.allows(Some(&header("Prom", "wrong"))));
        assert!(!auth.allows(Some(&header("prom", "s3cret:with colon"))));
        assert!(!auth.allows(Some(b"Bearer abc")));
        assert!(!auth.allows(None));
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_fix() {
        let path = write("plain.yml", "basic_auth_users:\n  prom: hunter2\n");
        let err = WebSecurity::load(&path).err().unwrap();
        assert!(
            err.contains("basic_auth_users.prom: not a bcrypt hash"),
            "{err}"
        );
        assert!(err.contains("htpasswd"), "{err}");
        let path = write(
            "mtls.yml",
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n",
        );
        let err = WebSecurity::load(&path).err().unwrap();
        assert!(err.contains("client_ca_file"), "{err}");
        assert!(err.contains("mtls.yml"), "{err}");
        let path = write(
            "nocert.yml",
            "tls_server_config:\n  cert_file: none.crt\n  key_file: none.key\n",
        );
        let err = WebSecurity::load(&path).err().unwrap();
        assert!(
            err.contains("cannot read") && err.contains("none.crt"),
            "{err}"
        );
        let empty = write("empty.yml", "");
        let security = WebSecurity::load(&empty).unwrap();
        assert!(security.tls.is_none() && security.auth.is_none());
    }
}
