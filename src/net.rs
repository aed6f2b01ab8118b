//! Who is asking, and under which name: the client address behind trusted reverse
//! proxies (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`), CIDR blocks, and what a `Host`
//! names (loopback, an IP literal, a configured server name). These are the facts behind
//! the API's local-only rule and the WebSocket same-origin rule (DNS rebinding).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::http::{header, HeaderMap, HeaderName};

/// The headers a reverse proxy uses to say whom it forwards for.
pub const FORWARDING: [HeaderName; 3] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-real-ip"),
];

/// An address block: `10.0.0.0/8`, `::1/128`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, bits) = match s.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let net = if bits.is_none() {
            net.to_canonical()
        } else {
            net
        };
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { net, bits })
    }
}

impl Cidr {
    /// True when `ip` (IPv4-mapped IPv6 counts as IPv4) is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip, width) = match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n).into(), u32::from(a).into(), 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
            _ => return false,
        };
        (net ^ ip)
            .checked_shr(width - u32::from(self.bits))
            .unwrap_or(0)
            == 0
    }
}

/// Where a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    /// The client: the TCP peer, or behind a trusted proxy the address the proxy forwards
    /// for (port 0 when not given; `0.0.0.0:0` when a hop is not an address).
    pub addr: SocketAddr,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The request carries `Forwarded`, `X-Forwarded-For` or `X-Real-IP`.
    pub forwarded: bool,
    /// The TCP peer is one of the trusted proxies.
    pub via_proxy: bool,
}

/// The reverse proxies whose forwarding headers are believed (`--trusted-proxies`).
#[derive(Debug, Clone, Default)]
pub struct Proxies(Vec<Cidr>);

impl Proxies {
    /// Parses `CIDR` entries (`10.0.0.0/8`, `127.0.0.1`, `::1/128`).
    pub fn parse(list: &[String]) -> Result<Self, String> {
        list.iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map(Proxies)
    }

    /// True when `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// Where a request from `peer` with `headers` comes from. Behind a trusted proxy the
    /// hops it lists are walked from the right (the nearest) past every trusted one; the
    /// first untrusted hop is the client, so what a client writes itself into the header
    /// (on the left) is never believed.
    pub fn remote(&self, peer: SocketAddr, headers: &HeaderMap) -> Remote {
        let forwarded = FORWARDING.iter().any(|h| headers.contains_key(h));
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let via_proxy = self.trusts(peer.ip());
        let unknown = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0);
        let mut addr = peer;
        if via_proxy && forwarded {
            let hops = hops(headers);
            if hops.is_empty() {
                addr = unknown; // a forwarding header naming nobody
            }
            for hop in hops.iter().rev() {
                match hop {
                    Some(hop) => addr = *hop,
                    None => {
                        addr = unknown;
                        break;
                    }
                }
                if !self.trusts(addr.ip()) {
                    break;
                }
            }
        }
        Remote {
            addr,
            peer,
            forwarded,
            via_proxy,
        }
    }
}

/// The hops a request went through, nearest last: `Forwarded: for=` when present, else
/// `X-Forwarded-For`, else `X-Real-IP`; `None` for a hop that is not an address.
fn hops(headers: &HeaderMap) -> Vec<Option<SocketAddr>> {
    let joined = |name: &HeaderName| {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("?"))
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let entries = |list: String| -> Vec<String> {
        list.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect()
    };
    if let Some(list) = joined(&header::FORWARDED) {
        return entries(list)
            .iter()
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_hop(v))
            })
            .collect();
    }
    let list = joined(&FORWARDING[1]).or_else(|| joined(&FORWARDING[2]));
    list.map(entries)
        .unwrap_or_default()
        .iter()
        .map(|e| parse_hop(e))
        .collect()
}

/// One hop: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]:80`, quoted or not.
fn parse_hop(s: &str) -> Option<SocketAddr> {
    let s = s.trim().trim_matches('"');
    let addr = if let Some(rest) = s.strip_prefix('[') {
        let (ip, rest) = rest.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if rest.is_empty() => 0,
            None => return None,
        };
        SocketAddr::new(ip.parse().ok()?, port)
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        SocketAddr::new(ip, 0)
    } else {
        s.parse().ok()?
    };
    Some(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
}

/// The name a `Host` header (or URI authority) gives, without port, lower case, without a
/// trailing dot: `[::1]:8083` → `::1`, `Example.COM.:80` → `example.com`.
pub fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(ip, _)| ip),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `localhost`, a `*.localhost` name (browsers resolve those to loopback themselves) or a
/// loopback address.
pub fn is_loopback_name(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// An IP address rather than a name (no DNS answer can rebind it).
pub fn is_ip_literal(name: &str) -> bool {
    name.parse::<IpAddr>().is_ok()
}

/// True when `name` is one of `names` (`--server-names`; `*.example.com` matches its
/// subdomains).
pub fn is_server_name(name: &str, names: &[String]) -> bool {
    names.iter().any(|n| {
        let n = n.trim().trim_end_matches('.');
        match n.strip_prefix("*.") {
            Some(suffix) => name
                .strip_suffix(&suffix.to_ascii_lowercase())
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => n.eq_ignore_ascii_case(name),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(c.contains(ip("::ffff:10.1.0.1")), "IPv4-mapped");
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(!c.contains(ip("::1")));
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains(ip("203.0.113.1")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains(ip("::1")) && !one.contains(ip("::2")));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("fe80::1")));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let proxies = Proxies::parse(&["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let addr = |pairs: &[(&str, &str)]| proxies.remote(peer, &headers(pairs)).addr;
        assert_eq!(addr(&[]), peer);
        assert_eq!(
            addr(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2")]),
            "203.0.113.9:0".parse().unwrap()
        );
        assert_eq!(
            addr(&[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "10.1.1.1")
            ]),
            "6.6.6.6:0".parse().unwrap()
        );
        assert_eq!(
            addr(&[(
                "forwarded",
                r#"for=6.6.6.6, For="[2001:db8::7]:4711";proto=https"#
            )]),
            "[2001:db8::7]:4711".parse().unwrap()
        );
        assert_eq!(
            addr(&[
                ("forwarded", "for=10.0.0.3"),
                ("x-forwarded-for", "6.6.6.6")
            ]),
            "10.0.0.3:0".parse().unwrap(),
            "Forwarded wins; all trusted: the leftmost"
        );
        assert_eq!(
            addr(&[("x-forwarded-for", "203.0.113.9, unknown")]),
            "0.0.0.0:0".parse().unwrap(),
            "a hop that is not an address"
        );
        assert_eq!(
            addr(&[("x-forwarded-for", " ")]),
            "0.0.0.0:0".parse().unwrap(),
            "a forwarding header naming nobody"
        );
        assert_eq!(
            addr(&[("x-real-ip", "198.51.100.4")]),
            "198.51.100.4:0".parse().unwrap()
        );
        // An untrusted peer's headers are noted, never believed.
        let r = Proxies::default().remote(peer, &headers(&[("x-forwarded-for", "6.6.6.6")]));
        assert_eq!((r.addr, r.forwarded, r.via_proxy), (peer, true, false));
    }

    #[test]
    fn host_names() {
        assert_eq!(host_name("[::1]:8083"), "::1");
        assert_eq!(host_name("Example.COM.:80"), "example.com");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        for local in [
            "localhost",
            "app.localhost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
        ] {
            assert!(is_loopback_name(local), "{local}");
        }
        for other in ["rebind.example", "localhost.example", "10.0.0.1", "::2"] {
            assert!(!is_loopback_name(other), "{other}");
        }
        assert!(is_ip_literal("10.0.0.1") && is_ip_literal("::2"));
        assert!(!is_ip_literal("rebind.example"));
        let names = ["push.example.com".to_string(), "*.apps.example".to_string()];
        assert!(is_server_name("push.example.com", &names));
        assert!(is_server_name("a.apps.example", &names));
        assert!(!is_server_name("apps.example", &names));
        assert!(!is_server_name("evilapps.example", &names));
        assert!(!is_server_name("rebind.example", &names));
    }
}
