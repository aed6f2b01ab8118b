//! The permessage-deflate handshake (RFC 7692 §5, §7.1): reading a client's offers from
//! `Sec-WebSocket-Extensions` and choosing the parameters the server answers with.

use super::MIN_WINDOW_BITS;

/// The server's side of the negotiation (from the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The LZ77 window of the server's compressor, 9..=15 (`server_max_window_bits`).
    pub window_bits: u8,
    /// Let a client keep compression contexts across messages when it does not offer
    /// `server_no_context_takeover` (resp. `client_no_context_takeover`). Off: the
    /// server always answers with both (RFC 7692 §7.1.1.1 and §7.1.1.2 allow it), so
    /// every compressed subscriber shares one deflate per message and no connection keeps
    /// a compressor or an inflater between messages.
    pub context_takeover: bool,
}

/// What one connection agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The server compresses every message on its own: its frames can be shared.
    pub server_no_context_takeover: bool,
    /// The client compresses every message on its own: no inflater is kept.
    pub client_no_context_takeover: bool,
    /// The window the server compresses with.
    pub server_window_bits: u8,
    /// `server_max_window_bits` is named in the response (the client offered it).
    pub server_window_named: bool,
    /// `client_max_window_bits=N` of the response (the client offered a value).
    pub client_window_bits: Option<u8>,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub fn response(&self) -> String {
        let mut out = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if self.server_window_named {
            out.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_window_bits
            ));
        }
        if let Some(bits) = self.client_window_bits {
            out.push_str(&format!("; client_max_window_bits={bits}"));
        }
        out
    }
}

/// One `permessage-deflate` offer's parameters.
#[derive(Debug, Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// Offered; with a value or not.
    client_max_window_bits: Option<Option<u8>>,
}

/// A window size parameter's value: 8..=15, as a token or a quoted string.
fn window_bits(value: &str) -> Option<u8> {
    let value = value.trim().trim_matches('"');
    if value.is_empty() || value.len() > 2 || value.starts_with('0') {
        return None;
    }
    value.parse().ok().filter(|b| (8..=15).contains(b))
}

/// Parses the parameters of one offer; `None` for an invalid one (unknown or repeated
/// parameter, bad value), which the server must decline (RFC 7692 §7.1).
fn parse_offer<'a>(params: impl Iterator<Item = &'a str>) -> Option<Offer> {
    let mut offer = Offer::default();
    let mut seen = [false; 4];
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v)),
            None => (param.trim(), None),
        };
        let index = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => {
                offer.server_no_context_takeover = true;
                0
            }
            "client_no_context_takeover" if value.is_none() => {
                offer.client_no_context_takeover = true;
                1
            }
            "server_max_window_bits" => {
                offer.server_max_window_bits = Some(window_bits(value?)?);
                2
            }
            "client_max_window_bits" => {
                offer.client_max_window_bits = Some(match value {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                });
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    Some(offer)
}

/// Picks the first acceptable `permessage-deflate` offer of the request's
/// `Sec-WebSocket-Extensions` values; `None` declines compression (no offer, or none the
/// server can honour, such as a `server_max_window_bits=8` that raw deflate cannot meet).
pub fn negotiate<'a>(headers: impl Iterator<Item = &'a str>, settings: Settings) -> Option<Agreed> {
    for offer in headers.flat_map(|h| h.split(',')) {
        let mut parts = offer.split(';');
        let name = parts.next().unwrap_or("").trim();
        if !name.eq_ignore_ascii_case("permessage-deflate") {
            continue;
        }
        let Some(offer) = parse_offer(parts.filter(|p| !p.trim().is_empty())) else {
            continue;
        };
        let server_window_bits = settings
            .window_bits
            .min(offer.server_max_window_bits.unwrap_or(15));
        if server_window_bits < MIN_WINDOW_BITS {
            continue;
        }
        let shared = !settings.context_takeover;
        return Some(Agreed {
            server_no_context_takeover: offer.server_no_context_takeover || shared,
            client_no_context_takeover: offer.client_no_context_takeover || shared,
            server_window_bits,
            server_window_named: offer.server_max_window_bits.is_some(),
            client_window_bits: offer.client_max_window_bits.flatten(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARED: Settings = Settings {
        window_bits: 15,
        context_takeover: false,
    };
    const KEEP: Settings = Settings {
        window_bits: 15,
        context_takeover: true,
    };

    fn answer(offer: &str, settings: Settings) -> Option<String> {
        negotiate([offer].into_iter(), settings).map(|a| a.response())
    }

    #[test]
    fn a_plain_offer_gets_both_no_context_takeovers_by_default() {
        assert_eq!(
            answer("permessage-deflate; client_max_window_bits", SHARED).as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        assert_eq!(
            answer("permessage-deflate", KEEP).as_deref(),
            Some("permessage-deflate")
        );
    }

    #[test]
    fn window_bits_are_honoured_and_capped() {
        let small = Settings {
            window_bits: 10,
            context_takeover: true,
        };
        assert_eq!(
            answer("permessage-deflate; server_max_window_bits=12", small).as_deref(),
            Some("permessage-deflate; server_max_window_bits=10")
        );
        assert_eq!(
            answer(
                "permessage-deflate; server_max_window_bits=\"9\"; client_max_window_bits=11",
                KEEP
            )
            .as_deref(),
            Some("permessage-deflate; server_max_window_bits=9; client_max_window_bits=11")
        );
        // 8 cannot be met by raw deflate: that offer is declined, the next one taken.
        assert_eq!(
            answer(
                "permessage-deflate; server_max_window_bits=8, permessage-deflate",
                KEEP
            )
            .as_deref(),
            Some("permessage-deflate")
        );
    }

    #[test]
    fn invalid_offers_are_declined() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; x_unknown",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(answer(bad, SHARED), None, "{bad}");
        }
    }
}
