//! From a configuration to what the server runs with: `build` validates the plain
//! fields (`Config::validate`) and builds, once, every runtime object the options
//! describe: the token verifier, the Pusher apps, the TLS acceptor, the trusted proxies
//! and the namespace table. A bad value is a `ConfigError` naming its key (exit 64).

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::auth::{KeyError, Verifier};
use crate::config::{Config, ConfigError};
use crate::namespace::Namespaces;
use crate::net::Proxies;
use crate::pusher::Apps;

/// A validated configuration and the objects built from it, ready for `server::run`.
pub struct Runtime {
    /// The configuration (validated).
    pub config: Arc<Config>,
    /// Token verifier, when `jwt_secret` or `jwt_public_key` is set.
    pub verifier: Option<Arc<Verifier>>,
    /// The Pusher apps (`--pusher-app` ones first; the first is the default app).
    pub apps: Apps,
    /// The TLS acceptor, when `tls_cert` and `tls_key` are set.
    pub tls: Option<TlsAcceptor>,
    /// The reverse proxies whose forwarding headers are believed.
    pub proxies: Arc<Proxies>,
    /// The namespace table (with `history_max_age` applied).
    pub namespaces: Arc<Namespaces>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("verifier", &self.verifier)
            .field("apps", &self.apps)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Validates `config` and builds what the server runs with; the first bad value is
/// reported with its key.
pub fn build(config: Config) -> Result<Runtime, ConfigError> {
    config.validate()?;
    let invalid = |key: &'static str, reason: String| ConfigError::Invalid { key, reason };
    let verifier = match (&config.jwt_secret, &config.jwt_public_key) {
        (Some(secret), _) => Some(Verifier::hs256(secret.as_bytes())),
        (None, Some(path)) => Some(Verifier::public_key(path, &config.jwt_algorithm)),
        (None, None) => None,
    }
    .transpose()
    .map_err(|e| {
        let key = match e {
            KeyError::ShortSecret => "jwt_secret",
            KeyError::Algorithm(_) => "jwt_algorithm",
            KeyError::Read { .. } | KeyError::NotAKey { .. } => "jwt_public_key",
        };
        invalid(key, e.to_string())
    })?
    .map(Arc::new);
    let apps = Apps::new(config.pusher_apps()?);
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key).map_err(|e| {
            invalid(
                if e.is_cert() { "tls_cert" } else { "tls_key" },
                e.to_string(),
            )
        })?),
        _ => None,
    };
    let proxies =
        Proxies::parse(&config.trusted_proxies).map_err(|e| invalid("trusted-proxies", e))?;
    Ok(Runtime {
        verifier,
        apps,
        tls,
        proxies: Arc::new(proxies),
        namespaces: Arc::new(config.namespaces()),
        config: Arc::new(config),
    })
}
