//! A Pusher protocol 7 client over a raw WebSocket, signed HTTP API requests and a
//! webhook receiver, shared by the Pusher tests (pusher, pusher_fidelity, pusher_limits,
//! pusher_webhooks, pusher_cluster).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use wspush::pusher::auth;

use crate::support::*;

/// A Pusher connection of app `key`/`secret`.
pub struct Pusher {
    pub ws: Ws,
    pub socket_id: String,
    pub key: String,
    pub secret: String,
}

fn decode(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON {text:?}: {e}"))
}

/// `data` as the protocol sends it (a JSON string) parsed.
pub fn data(ev: &Value) -> Value {
    match &ev["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

impl Pusher {
    /// Connects and reads `pusher:connection_established`.
    pub async fn connect(server: &impl Server, key: &str, secret: &str) -> Self {
        let mut p = Self::open(server, key, secret).await;
        let ev = p.next().await;
        assert_eq!(ev["event"], "pusher:connection_established", "{ev}");
        p.socket_id = data(&ev)["socket_id"].as_str().unwrap().to_string();
        p
    }

    /// Opens the WebSocket only.
    pub async fn open(server: &impl Server, key: &str, secret: &str) -> Self {
        let url = format!("ws://{}/app/{key}?protocol=7&client=rust", server.addr());
        let (ws, _) = within("pusher connect", tokio_tungstenite::connect_async(url))
            .await
            .unwrap();
        Pusher {
            ws,
            socket_id: String::new(),
            key: key.into(),
            secret: secret.into(),
        }
    }

    pub async fn send(&mut self, v: Value) {
        within("send", self.ws.send(Message::text(v.to_string())))
            .await
            .unwrap();
    }

    pub async fn next(&mut self) -> Value {
        decode(&next_text(&mut self.ws).await)
    }

    /// The next event named `name`, skipping others.
    pub async fn expect(&mut self, name: &str) -> Value {
        loop {
            let ev = self.next().await;
            if ev["event"] == name {
                return ev;
            }
        }
    }

    /// Asserts no event named `name` arrives within `dur` (others are skipped).
    pub async fn none_of(&mut self, name: &str, dur: Duration) {
        let end = tokio::time::Instant::now() + dur;
        while let Ok(text) = tokio::time::timeout_at(end, next_text(&mut self.ws)).await {
            let ev = decode(&text);
            assert_ne!(ev["event"], name, "unexpected {ev}");
        }
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send(json!({"event": "pusher:subscribe", "data": {"channel": channel}}))
            .await;
        self.next().await
    }

    fn auth(&self, msg: &str) -> String {
        format!("{}:{}", self.key, auth::sign(&self.secret, msg.as_bytes()))
    }

    pub async fn private(&mut self, channel: &str) -> Value {
        let auth = self.auth(&format!("{}:{channel}", self.socket_id));
        self.send(json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}}))
            .await;
        self.next().await
    }

    pub async fn presence_with(&mut self, channel: &str, channel_data: Value) -> Value {
        let cd = channel_data.to_string();
        let auth = self.auth(&format!("{}:{channel}:{cd}", self.socket_id));
        self.send(json!({"event": "pusher:subscribe",
            "data": {"channel": channel, "auth": auth, "channel_data": cd}}))
            .await;
        self.next().await
    }

    pub async fn presence(&mut self, channel: &str, user: &str) -> Value {
        self.presence_with(
            channel,
            json!({"user_id": user, "user_info": {"name": user}}),
        )
        .await
    }

    /// Signs in with `user_data`; the `pusher:signin_success` event.
    pub async fn sign_in(&mut self, user_data: Value) -> Value {
        let ud = user_data.to_string();
        let auth = self.auth(&format!("{}::user::{ud}", self.socket_id));
        self.send(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": ud}}))
            .await;
        self.expect("pusher:signin_success").await
    }

    /// The `pusher:error` then the close code.
    pub async fn error_then_close(&mut self) -> (Value, u16) {
        let ev = self.expect("pusher:error").await;
        (ev, close_code(&mut self.ws).await)
    }
}

/// A signed Pusher HTTP API request; status and JSON body.
pub async fn signed(
    server: &impl Server,
    method: &str,
    path: &str,
    body: Option<&str>,
    creds: (&str, &str),
) -> (u16, Value) {
    signed_query(server, method, path, &[], body.unwrap_or_default(), creds).await
}

/// A signed Pusher HTTP API request with query `params` besides the signature's.
pub async fn signed_query(
    server: &impl Server,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &str,
    (key, secret): (&str, &str),
) -> (u16, Value) {
    let mut q: BTreeMap<String, String> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    q.insert("auth_key".into(), key.into());
    q.insert(
        "auth_timestamp".into(),
        wspush::auth::unix_now().to_string(),
    );
    q.insert("auth_version".into(), "1.0".into());
    if !body.is_empty() {
        q.insert("body_md5".into(), auth::body_md5(body.as_bytes()));
    }
    let sig = auth::sign(secret, auth::string_to_sign(method, path, &q).as_bytes());
    q.insert("auth_signature".into(), sig);
    let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let url = format!("{}?{}", server.http(path), query.join("&"));
    let client = reqwest::Client::new();
    let req = match method {
        "POST" => client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string()),
        "DELETE" => client.delete(url),
        _ => client.get(url),
    };
    let resp = within("pusher API", req.send()).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// One webhook request as received: when, the key and signature headers, the body.
#[derive(Debug, Clone)]
pub struct Hook {
    pub at: Instant,
    pub key: String,
    pub signature: String,
    pub body: String,
}

impl Hook {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    /// `"name channel user"` of each event.
    pub fn events(&self) -> Vec<String> {
        self.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let user = match &e["user_id"] {
                    Value::Null => "-".to_string(),
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                format!(
                    "{} {} {user}",
                    e["name"].as_str().unwrap(),
                    e["channel"].as_str().unwrap()
                )
            })
            .collect()
    }
}

/// A webhook receiver answering each request with the next status of `statuses` (the
/// last one repeats); its URL, the requests it got and how many.
pub async fn receiver(
    statuses: Vec<u16>,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<Hook>,
    Arc<AtomicUsize>,
) {
    use axum::http::{HeaderMap, StatusCode};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (tx, calls, statuses) = (tx.clone(), counted.clone(), statuses.clone());
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default()
                };
                let n = calls.fetch_add(1, SeqCst);
                let _ = tx.send(Hook {
                    at: Instant::now(),
                    key: h("x-pusher-key"),
                    signature: h("x-pusher-signature"),
                    body,
                });
                let status = statuses[n.min(statuses.len() - 1)];
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx, calls)
}
