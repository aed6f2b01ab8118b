//! The one channel access decision. Every front asks here before it subscribes,
//! publishes, reads history or presence for a client, so a channel one protocol protects
//! cannot be reached through another (issue #12: private Pusher channels were readable
//! and writable from `/ws`).
//!
//! The rules, in order:
//! 1. Pusher's reserved kinds (`private-`, `private-encrypted-`, `presence-`,
//!    `#server-to-user-`, and their `cache-` forms, which share the prefixes) are reached
//!    through Pusher auth (a valid subscription signature or sign-in), or by a token whose
//!    grant *names* the kind: a pattern such as `private-a` or `private-*`, never `*`.
//! 2. Otherwise the channel's namespace decides what clients without a grant may do; a
//!    token grant (a matching pattern) allows more. Namespace rules apply to Pusher
//!    public channels too (a Pusher connection carries no token grant).

use crate::auth::Grant;
use crate::namespace::{Access, Namespaces};

/// What a client asks to do on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Receive the channel's messages.
    Subscribe,
    /// Publish to it (a JSON `publish`, a Pusher client event).
    Publish,
    /// Read its stored messages.
    History,
    /// Read who is in it.
    Presence,
}

impl Action {
    /// The namespace/grant level the action needs.
    fn needs(self) -> Access {
        match self {
            Action::Publish => Access::Publish,
            Action::Subscribe | Action::History | Action::Presence => Access::Subscribe,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe to",
            Action::Publish => "publish to",
            Action::History => "read the history of",
            Action::Presence => "read the presence of",
        }
    }
}

/// Who asks: a native (raw/JSON/SSE) client with its token grant, if any, or a Pusher
/// connection, with whether Pusher auth covered this channel.
#[derive(Debug, Clone, Copy)]
pub enum Asker<'a> {
    /// A raw or JSON-mode client.
    Native(Option<&'a Grant>),
    /// A Pusher protocol connection; `signed` when the subscription carried a valid
    /// signature (private/presence) or the user signed in (`#server-to-user-`).
    Pusher {
        /// Pusher auth covers the channel.
        signed: bool,
    },
}

/// Why access is refused (the text is the message the client sees).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// A Pusher-reserved channel without Pusher auth or a grant naming it.
    #[error("{channel:?} is a Pusher {kind} channel: it needs Pusher channel auth, or a token whose `channels` claim names it (e.g. \"{kind}-*\")")]
    Reserved {
        /// The channel.
        channel: String,
        /// Its kind (`private`, `presence`, ...).
        kind: &'static str,
    },
    /// The namespace does not let clients without a grant do this, and no grant does.
    #[error("{who} may not {verb} {channel:?}")]
    Forbidden {
        /// "anonymous clients" or "this token".
        who: &'static str,
        /// What was asked.
        verb: &'static str,
        /// The channel.
        channel: String,
    },
}

/// The reserved Pusher prefix `channel` starts with, and its kind's name.
pub fn reserved(channel: &str) -> Option<(&'static str, &'static str)> {
    const KINDS: [(&str, &str); 4] = [
        ("private-encrypted-", "private-encrypted"),
        ("private-", "private"),
        ("presence-", "presence"),
        ("#server-to-user-", "#server-to-user"),
    ];
    KINDS
        .into_iter()
        .find(|(prefix, _)| channel.starts_with(prefix))
}

/// Decides whether `asker` may do `action` on `channel` (the name as the client gave
/// it; for Pusher, the app's channel name).
pub fn check(
    namespaces: &Namespaces,
    asker: Asker<'_>,
    channel: &str,
    action: Action,
) -> Result<(), Denied> {
    let need = action.needs();
    if let Some((prefix, kind)) = reserved(channel) {
        let ok = match asker {
            Asker::Pusher { signed } => signed,
            Asker::Native(grant) => grant.is_some_and(|g| g.names(channel, prefix, need)),
        };
        return if ok {
            Ok(())
        } else {
            Err(Denied::Reserved {
                channel: channel.to_string(),
                kind: kind.trim_start_matches('#'),
            })
        };
    }
    if namespaces.of(channel).anonymous >= need {
        return Ok(());
    }
    let granted = match asker {
        Asker::Native(grant) => grant.is_some_and(|g| g.allows(channel, need)),
        Asker::Pusher { signed } => signed,
    };
    if granted {
        return Ok(());
    }
    let has_grant = matches!(asker, Asker::Native(Some(_)));
    Err(Denied::Forbidden {
        who: if has_grant {
            "this token"
        } else {
            "anonymous clients"
        },
        verb: action.verb(),
        channel: channel.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::Namespace;

    fn grant(patterns: &[&str]) -> Grant {
        Grant::for_user("u".into()).with_channels(patterns.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn reserved_kinds_need_pusher_auth_or_a_grant_naming_them() {
        let ns = Namespaces::new(vec![]);
        for channel in [
            "private-a",
            "private-cache-a",
            "private-encrypted-z",
            "presence-r",
            "presence-cache-r",
            "#server-to-user-42",
        ] {
            for action in [
                Action::Subscribe,
                Action::Publish,
                Action::History,
                Action::Presence,
            ] {
                assert!(
                    check(&ns, Asker::Native(None), channel, action).is_err(),
                    "{channel}"
                );
                let all = grant(&["*"]);
                assert!(check(&ns, Asker::Native(Some(&all)), channel, action).is_err());
                let loose = grant(&["pri*", "pres*", "#*"]);
                assert!(check(&ns, Asker::Native(Some(&loose)), channel, action).is_err());
                assert!(check(&ns, Asker::Pusher { signed: false }, channel, action).is_err());
                assert!(check(&ns, Asker::Pusher { signed: true }, channel, action).is_ok());
            }
        }
        let named = grant(&["private-a", "presence-*"]);
        assert!(check(
            &ns,
            Asker::Native(Some(&named)),
            "private-a",
            Action::Publish
        )
        .is_ok());
        assert!(check(
            &ns,
            Asker::Native(Some(&named)),
            "presence-r",
            Action::Presence
        )
        .is_ok());
        assert!(check(
            &ns,
            Asker::Native(Some(&named)),
            "private-b",
            Action::Subscribe
        )
        .is_err());
        // `private-*` names private channels, not encrypted ones.
        let private = grant(&["private-*"]);
        let asker = Asker::Native(Some(&private));
        assert!(check(&ns, asker, "private-encrypted-z", Action::Subscribe).is_err());
    }

    #[test]
    fn namespaces_rule_every_front() {
        let ns = Namespaces::new(vec![Namespace {
            prefix: "".into(),
            anonymous: Access::None,
            ..Namespace::fallback()
        }]);
        let denied = check(
            &ns,
            Asker::Pusher { signed: false },
            "news",
            Action::Subscribe,
        );
        assert!(matches!(denied, Err(Denied::Forbidden { .. })));
        assert!(check(&ns, Asker::Native(None), "news", Action::History).is_err());
        let g = grant(&["news"]);
        assert!(check(&ns, Asker::Native(Some(&g)), "news", Action::Publish).is_ok());
        let open = Namespaces::new(vec![]);
        assert!(check(&open, Asker::Native(None), "news", Action::Publish).is_ok());
        assert!(check(
            &open,
            Asker::Pusher { signed: false },
            "news",
            Action::Subscribe
        )
        .is_ok());
    }
}
