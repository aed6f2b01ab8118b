//! The startup banner (on stderr): where a newcomer is — the demo page, the WebSocket
//! URLs, who may call the API, the origin rule, the broker, history, the console and
//! the upstream — each line naming the option that changes it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::config::{Config, Spec};

/// The banner's lines for a server listening on `addr` (`tls`: https/wss).
pub fn lines(config: &Config, addr: SocketAddr) -> Vec<String> {
    let tls = config.tls_cert.is_some();
    let (http, ws) = if tls {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    // A wildcard address is reached as localhost from this machine.
    let shown = if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    };
    let mut out = vec![
        format!(
            "wspush {} ready (stop: Ctrl-C; every option: wspush serve --help, docs/configuration.md)",
            env!("CARGO_PKG_VERSION")
        ),
        format!("  demo page:  {http}://{shown}/"),
        format!(
            "  WebSocket:  {ws}://{shown}/ws  (raw mode; ?channels=a,b; JSON mode: ?protocol=json)"
        ),
    ];
    for path in &config.ws_paths {
        out.push(format!(
            "              {ws}://{shown}{path}  (raw mode, --ws-path)"
        ));
    }
    out.push(match &config.api_key {
        Some(_) => format!(
            "  HTTP API:   {http}://{shown}/api/publish  (needs Authorization: apikey KEY)"
        ),
        None => format!(
            "  HTTP API:   {http}://{shown}/api/publish  (loopback only: set --api-key to call it from elsewhere)"
        ),
    });
    let origins = &config.allowed_origins;
    out.push(if origins.is_empty() {
        "  origins:    pages of this server's own origin only (others: --allowed-origins URL, \
         null for a page opened from a file)"
            .to_string()
    } else if origins.iter().any(|o| o == "*") {
        "  origins:    any page may connect (--allowed-origins *)".to_string()
    } else {
        format!("  origins:    own origin and {}", origins.join(", "))
    });
    let redis = config.redis_urls();
    out.push(if redis.is_empty() {
        "  broker:     memory (one node; --broker redis://HOST:PORT for a cluster)".to_string()
    } else {
        format!(
            "  broker:     redis ({} node(s) of the channel space)",
            redis.len()
        )
    });
    let history: Vec<&str> = config
        .namespaces
        .iter()
        .filter(|n| n.keeps_history())
        .map(|n| n.prefix.as_str())
        .collect();
    out.push(if history.is_empty() {
        "  history:    off (a [[namespaces]] entry with history_size keeps some)".to_string()
    } else {
        let shown: Vec<String> = history.iter().map(|p| format!("{p:?}*")).collect();
        format!("  history:    on for channels {}", shown.join(", "))
    });
    out.push(if config.no_console {
        "  console:    off (--no-console)".to_string()
    } else {
        "  console:    on: type a line to send it to every client, > text to answer the last \
         one, /help for the rest"
            .to_string()
    });
    let upstream = match &config.upstream {
        Spec::None => "none: raw clients' messages are shown here only".to_string(),
        Spec::Echo => "echo: raw clients get their messages back".to_string(),
        Spec::Publish(c) => format!("publish: raw clients' messages go to channel {c:?}"),
        Spec::Webhook(u) => format!("webhook: raw clients' messages are POSTed to {u}"),
        Spec::Exec(words) => format!(
            "exec: one {:?} process per raw client (at most {})",
            words[0], config.max_exec_processes
        ),
    };
    out.push(format!("  upstream:   {upstream}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // issue #16 item 2
    #[test]
    fn says_https_with_tls_and_names_the_options() {
        let mut config = Config::default();
        let addr: SocketAddr = "0.0.0.0:8083".parse().unwrap();
        let text = lines(&config, addr).join("\n");
        assert!(
            text.contains("demo page:  http://127.0.0.1:8083/"),
            "{text}"
        );
        assert!(text.contains("loopback only"), "{text}");
        assert!(text.contains("history:    off"), "{text}");
        config.tls_cert = Some("c.pem".into());
        config.api_key = Some("k".into());
        config.ws_paths = vec!["/websocket/demo.php".into()];
        let text = lines(&config, addr).join("\n");
        assert!(
            text.contains("demo page:  https://127.0.0.1:8083/"),
            "{text}"
        );
        assert!(
            text.contains("wss://127.0.0.1:8083/websocket/demo.php"),
            "{text}"
        );
        assert!(text.contains("apikey KEY"), "{text}");
    }
}
