//! `--web-config FILE`: TLS and basic authentication on the endpoint, in the web configuration
//! format Prometheus and its exporters read (prometheus/exporter-toolkit's
//! `docs/web-configuration.md`), so one file serves the whole monitoring stack:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
//!   client_ca_file: ca.crt
//!   min_version: TLS12                             # TLS12 (default) or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...                         # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! Paths are relative to the file. Keys of that format this endpoint does not implement
//! (cipher suites, curves, HTTP headers) are refused by name rather than ignored.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    http_server_config: Option<yaml_serde::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<yaml_serde::Value>,
    curve_preferences: Option<yaml_serde::Value>,
    prefer_server_cipher_suites: Option<yaml_serde::Value>,
    client_allowed_sans: Option<yaml_serde::Value>,
}

/// The endpoint's protection, as the file asks.
#[derive(Clone, Default)]
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<BasicAuth>,
}

impl WebConfig {
    pub fn read(path: &Path) -> Result<WebConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the web configuration {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// The configuration in `text`, read from `path` (its directory anchors relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<WebConfig> {
        let file: File = yaml_serde::from_str(text).with_context(|| format!("{}: not a valid web configuration", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let unsupported = |what: &str| anyhow::anyhow!("{}: {what} is not supported by scope-probe's endpoint", path.display());
        if file.http_server_config.is_some() {
            return Err(unsupported("http_server_config"));
        }
        let tls = match file.tls_server_config {
            None => None,
            Some(t) => {
                for (set, key) in [
                    (t.cipher_suites.is_some(), "tls_server_config.cipher_suites"),
                    (t.curve_preferences.is_some(), "tls_server_config.curve_preferences"),
                    (t.prefer_server_cipher_suites.is_some(), "tls_server_config.prefer_server_cipher_suites"),
                    (t.client_allowed_sans.is_some(), "tls_server_config.client_allowed_sans"),
                ] {
                    if set {
                        return Err(unsupported(key));
                    }
                }
                Some(Arc::new(tls_config(&t, dir).with_context(|| format!("{}: tls_server_config", path.display()))?))
            }
        };
        let auth = if file.basic_auth_users.is_empty() {
            None
        } else {
            for (user, hash) in &file.basic_auth_users {
                // A hash that bcrypt cannot read would refuse its user at every request: say so now.
                bcrypt::verify("", hash).with_context(|| format!("{}: basic_auth_users.{user} is not a bcrypt hash", path.display()))?;
            }
            Some(BasicAuth { users: Arc::new(file.basic_auth_users), verified: Arc::default() })
        };
        Ok(WebConfig { tls, auth })
    }

    /// How the endpoint is reached, for the start-up line.
    pub fn describe(&self) -> &'static str {
        match (&self.tls, &self.auth) {
            (Some(_), Some(_)) => " (TLS, basic auth)",
            (Some(_), None) => " (TLS)",
            (None, Some(_)) => " (basic auth)",
            (None, None) => "",
        }
    }
}

fn tls_config(t: &TlsFile, dir: &Path) -> Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) else {
        bail!("cert_file and key_file are both required");
    };
    let (cert, key) = (dir.join(cert), dir.join(key));
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(&cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| anyhow::anyhow!("cert_file {}: {e}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "cert_file {}: no certificate in it", cert.display());
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| anyhow::anyhow!("key_file {}: {e}", key.display()))?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match (t.min_version.as_deref(), t.max_version.as_deref()) {
        (None | Some("TLS12"), None | Some("TLS13")) => &[&rustls::version::TLS12, &rustls::version::TLS13],
        (Some("TLS13"), None | Some("TLS13")) => &[&rustls::version::TLS13],
        (None | Some("TLS12"), Some("TLS12")) => &[&rustls::version::TLS12],
        (min, max) => bail!("min_version {min:?} / max_version {max:?}: TLS12 and TLS13 are supported (TLS10 and TLS11 are not)"),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let verifier = match t.client_auth_type.as_deref() {
        None | Some("NoClientCert") => None,
        Some(kind @ ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven")) => {
            let ca =
                t.client_ca_file.as_ref().map(|f| dir.join(f)).with_context(|| format!("client_auth_type {kind} needs client_ca_file"))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&ca).map_err(|e| anyhow::anyhow!("client_ca_file {}: {e}", ca.display()))? {
                roots.add(c.map_err(|e| anyhow::anyhow!("client_ca_file {}: {e}", ca.display()))?)?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if kind == "VerifyClientCertIfGiven" { v.allow_unauthenticated() } else { v };
            Some(v.build().context("client_ca_file")?)
        }
        Some(other) => {
            bail!("client_auth_type {other:?}: NoClientCert, VerifyClientCertIfGiven and RequireAndVerifyClientCert are supported")
        }
    };
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).context("cert_file and key_file do not make a key pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Users and their bcrypt hashes. A hash costs ~50 ms to check at cost 10, so credentials
/// checked once are remembered (exactly as sent: a changed password is checked afresh).
#[derive(Clone)]
pub struct BasicAuth {
    users: Arc<BTreeMap<String, String>>,
    verified: Arc<Mutex<HashSet<String>>>,
}

/// Credentials remembered at most (a scraper sends the same ones; anything else is checked).
const REMEMBERED: usize = 64;

impl BasicAuth {
    fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        use base64::Engine;
        let Some(encoded) = authorization.and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic ")) else {
            return false;
        };
        if self.verified.lock().unwrap_or_else(|e| e.into_inner()).contains(encoded) {
            return true;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
        let Some((user, password)) = std::str::from_utf8(&decoded).ok().and_then(|s| s.split_once(':')) else { return false };
        let ok = self.users.get(user).is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false));
        if ok {
            let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if v.len() < REMEMBERED {
                v.insert(encoded.to_owned());
            }
        }
        ok
    }
}

/// The middleware: every path needs the credentials when users are configured.
pub async fn require_auth(State(auth): State<BasicAuth>, request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).cloned();
    // bcrypt is slow on purpose: off the async threads.
    let ok = tokio::task::spawn_blocking(move || auth.allows(header.as_ref())).await.unwrap_or(false);
    if ok {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"scope-probe\"")], "unauthorized\n").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Fuzzing on stable Rust: no text makes the parser panic (it errs or it reads).
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
            let _ = WebConfig::parse(&text, Path::new("/nonexistent/web.yml"));
        }

        /// Nor does text shaped like the format, with arbitrary values.
        #[test]
        fn arbitrary_values_never_panic(a in "\\PC{0,40}", b in "\\PC{0,40}", user in "[a-z]{1,8}") {
            let text = format!("tls_server_config:\n  cert_file: {a}\n  key_file: {b}\n  min_version: {a}\nbasic_auth_users:\n  {user}: {b}\n");
            let _ = WebConfig::parse(&text, Path::new("/nonexistent/web.yml"));
        }
    }

    #[test]
    fn users_are_checked_against_their_hashes() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let c = WebConfig::parse(&format!("basic_auth_users:\n  alice: {hash}\n"), Path::new("web.yml")).unwrap();
        let auth = c.auth.unwrap();
        let header = |s: &str| {
            use base64::Engine;
            HeaderValue::from_str(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s))).unwrap()
        };
        assert!(auth.allows(Some(&header("alice:pw"))));
        assert!(auth.allows(Some(&header("alice:pw"))), "remembered");
        assert!(!auth.allows(Some(&header("alice:pW"))));
        assert!(!auth.allows(Some(&header("bob:pw"))));
        assert!(!auth.allows(None));
        assert!(!auth.allows(Some(&HeaderValue::from_static("Bearer x"))));
    }
}
