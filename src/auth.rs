//! JWT authentication: verifying tokens (HS256 with a shared secret, RS256/ES256 with a
//! PEM public key; only the configured algorithm is accepted) into a `Grant`: the user
//! id, the expiry, and the channels the token allows to subscribe and publish.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::namespace::Access;

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No verifier is configured, so tokens cannot be accepted.
    #[error("this server is not configured for tokens")]
    NotConfigured,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// Bad signature, wrong algorithm, malformed, or missing claims.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Why a verifier cannot be made from its key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The HS256 secret is too short to resist guessing.
    #[error("must be at least 16 bytes")]
    ShortSecret,
    /// The public key file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The algorithm is not one a public key can verify.
    #[error("{0:?} is not RS256 or ES256")]
    Algorithm(String),
    /// The file holds no public key of the algorithm.
    #[error("not a {algorithm:?} public key in PEM: {reason}")]
    NotAKey {
        /// The algorithm asked for.
        algorithm: Algorithm,
        /// The parser's message.
        reason: String,
    },
}

/// A channel pattern from a token: `news` (exact), `chat:*` (prefix) or `*` (any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// True when `channel` matches.
    pub fn matches(&self, channel: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => channel.starts_with(prefix),
            None => self.0 == channel,
        }
    }
}

/// What a verified token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The user id (`sub`).
    pub user: Arc<str>,
    /// Expiry, seconds since the Unix epoch (`exp`).
    pub exp: u64,
    subscribe: Vec<Pattern>,
    publish: Vec<Pattern>,
}

impl Grant {
    /// A grant naming only a user (no channels, no expiry), to bind a connection that
    /// authenticated otherwise (e.g. Pusher sign-in) to a user.
    pub fn for_user(user: Arc<str>) -> Self {
        Grant {
            user,
            exp: 0,
            subscribe: Vec::new(),
            publish: Vec::new(),
        }
    }

    /// A grant allowing both subscribe and publish on `patterns` (tests).
    #[cfg(test)]
    pub(crate) fn with_channels(mut self, patterns: Vec<String>) -> Self {
        self.subscribe = patterns.iter().cloned().map(Pattern).collect();
        self.publish = patterns.into_iter().map(Pattern).collect();
        self
    }

    /// True when the token allows `access` on `channel` (publishing implies subscribing).
    pub fn allows(&self, channel: &str, access: Access) -> bool {
        self.any_pattern(access, |p| p.matches(channel))
    }

    /// True when a pattern allowing `access` on `channel` names `kind` outright: its
    /// literal part starts with the kind's prefix (`private-a`, `private-*`), so `*` or
    /// `priv*` do not open Pusher's reserved channels.
    pub fn names(&self, channel: &str, kind: &str, access: Access) -> bool {
        self.any_pattern(access, |p| {
            p.matches(channel) && p.0.strip_suffix('*').unwrap_or(&p.0).starts_with(kind)
        })
    }

    fn any_pattern(&self, access: Access, pred: impl Fn(&Pattern) -> bool) -> bool {
        let any = |list: &[Pattern]| list.iter().any(&pred);
        match access {
            Access::None => true,
            Access::Subscribe => any(&self.subscribe) || any(&self.publish),
            Access::Publish => any(&self.publish),
        }
    }
}

/// The `channels` claim: one list for both, or separate lists.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ChannelsClaim {
    Both(Vec<String>),
    Split {
        #[serde(default)]
        subscribe: Vec<String>,
        #[serde(default)]
        publish: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    channels: Option<ChannelsClaim>,
}

/// Verifies tokens with the configured key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({:?})", self.validation.algorithms)
    }
}

impl Verifier {
    /// An HS256 verifier with a shared secret (at least 16 bytes).
    pub fn hs256(secret: &[u8]) -> Result<Verifier, KeyError> {
        if secret.len() < 16 {
            return Err(KeyError::ShortSecret);
        }
        Ok(Verifier::with(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
        ))
    }

    /// An RS256 or ES256 verifier (`algorithm`) with the PEM public key in the file `path`.
    pub fn public_key(path: &Path, algorithm: &str) -> Result<Verifier, KeyError> {
        let pem = std::fs::read(path).map_err(|e| KeyError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        let alg = match algorithm {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => return Err(KeyError::Algorithm(other.to_string())),
        };
        let key = match alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
            _ => DecodingKey::from_ec_pem(&pem),
        }
        .map_err(|e| KeyError::NotAKey {
            algorithm: alg,
            reason: e.to_string(),
        })?;
        Ok(Verifier::with(key, alg))
    }

    fn with(key: DecodingKey, alg: Algorithm) -> Verifier {
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Verifier { key, validation }
    }

    /// Verifies a token (signature, algorithm, `exp`) into a grant.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".into()));
        }
        let patterns = |v: Vec<String>| v.into_iter().map(Pattern).collect::<Vec<_>>();
        let (subscribe, publish) = match claims.channels {
            None => (Vec::new(), Vec::new()),
            Some(ChannelsClaim::Both(all)) => (patterns(all.clone()), patterns(all)),
            Some(ChannelsClaim::Split { subscribe, publish }) => {
                (patterns(subscribe), patterns(publish))
            }
        };
        Ok(Grant {
            user: Arc::from(claims.sub),
            exp: claims.exp,
            subscribe,
            publish,
        })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(Pattern("chat:*".into()).matches("chat:1"));
        assert!(!Pattern("chat:*".into()).matches("chatter"));
        assert!(Pattern("news".into()).matches("news"));
        assert!(!Pattern("news".into()).matches("news2"));
        assert!(Pattern("*".into()).matches("anything"));
        let g = Grant {
            user: "u".into(),
            exp: 0,
            subscribe: vec![Pattern("news".into())],
            publish: vec![Pattern("chat:*".into())],
        };
        assert!(g.allows("news", Access::Subscribe));
        assert!(!g.allows("news", Access::Publish));
        assert!(g.allows("chat:a", Access::Subscribe));
        assert!(g.allows("chat:a", Access::Publish));
        assert!(!g.allows("other", Access::Subscribe));
    }
}
