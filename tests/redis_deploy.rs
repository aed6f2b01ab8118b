//! The Redis that operators run (issue #17 item 3): `redis_prefix` separating servers
//! that share one Redis, TLS (`rediss://` with `redis_ca_file`) against a redis-server
//! serving TLS with a certificate made here, and closing a client of another node.
//! Redis Cluster and Sentinel failover: tests/redis_cluster.rs.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use wspush::broker::RedisMode;
use wspush::config::Config;
use wspush::namespace::{Access, Namespace};

fn with_history(c: &mut Config, broker: &str) {
    c.broker = broker.to_string();
    c.namespaces = vec![Namespace {
        prefix: "".into(),
        history_size: 100,
        history_ttl: None,
        presence: false,
        anonymous: Access::Publish,
    }];
}

async fn delete(url: &str) -> (u16, serde_json::Value) {
    let resp = within("DELETE", reqwest::Client::new().delete(url).send())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(json!(null)))
}

// issue #17 item 3: two servers sharing one Redis with different `redis_prefix` values
// do not see each other's messages, offsets, history or clients; every key they write
// starts with their prefix.
#[tokio::test]
async fn servers_with_different_prefixes_share_one_redis_without_meeting() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let blue = TestServer::with(|c| {
        with_history(c, &url);
        c.redis_prefix = "blue:".into();
    })
    .await;
    let green = TestServer::with(|c| {
        with_history(c, &url);
        c.redis_prefix = "green:".into();
    })
    .await;
    let mut on_blue = JsonClient::connect(&blue.ws("")).await;
    let mut on_green = JsonClient::connect(&green.ws("")).await;
    for c in [&mut on_blue, &mut on_green] {
        let r = c.cmd(json!({"op": "subscribe", "channel": "news"})).await;
        assert_eq!(r["ok"], json!(true), "{r}");
    }
    assert_eq!(publish(&green, "news", "for green").await, 1);
    assert_eq!(
        publish(&blue, "news", "for blue").await,
        1,
        "offsets are per prefix"
    );
    let p = on_green.push().await;
    assert_eq!((&p["offset"], &p["data"]), (&json!(1), &json!("for green")));
    let p = on_blue.push().await;
    assert_eq!((&p["offset"], &p["data"]), (&json!(1), &json!("for blue")));
    // Each saw its own message; nothing of the other one follows.
    assert_silent(&mut on_blue.ws, Duration::from_millis(300)).await;
    assert_silent(&mut on_green.ws, Duration::from_millis(300)).await;
    let (_, body) = get(&blue.http("/api/history/news")).await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["messages"][0]["data"], json!("for blue"), "{body}");
    // A client of the other prefix is no client of ours.
    let (status, _) = delete(&blue.http(&format!("/api/clients/{}", on_green.id))).await;
    assert_eq!(status, 404);
    let keys = redis_cli(redis.port, &["--scan"]).await;
    assert!(!keys.is_empty());
    for key in keys.lines() {
        assert!(
            key.starts_with("blue:{") || key.starts_with("green:{"),
            "key {key:?} outside the prefixes"
        );
    }
    blue.shutdown().await;
    green.shutdown().await;
}

// issue #17 item 3: `DELETE /api/clients/{id}` on one node closes a client of another
// node (1008), as `send` reaches it; the lists say they are per node.
#[tokio::test]
async fn delete_closes_a_client_of_another_node_and_lists_say_per_node() {
    let redis = RedisServer::start().await;
    let a = TestServer::with(|c| with_history(c, &redis.url())).await;
    let b = TestServer::with(|c| with_history(c, &redis.url())).await;
    let (mut far, far_id) = connect(&b.ws("?channels=x")).await;
    let (_, list) = get(&a.http("/api/clients")).await;
    assert_eq!(list["scope"], json!("node"), "{list}");
    assert!(list["node"].as_u64().is_some(), "{list}");
    assert!(!list.to_string().contains(&far_id), "{list}");
    let (_, channels) = get(&a.http("/api/channels")).await;
    assert_eq!(
        (channels["scope"].clone(), channels["channels"].clone()),
        (json!("node"), json!([]))
    );
    let (status, body) = delete(&a.http(&format!("/api/clients/{far_id}"))).await;
    assert_eq!(
        (status, body),
        (200, json!({ "disconnected": far_id })),
        "a client of node b, asked of node a"
    );
    assert_eq!(close_code(&mut far).await, 1008);
    // A client id of a node that does not exist.
    let (status, _) = delete(&a.http("/api/clients/c-77777777777")).await;
    assert_eq!(status, 404);
    a.shutdown().await;
    b.shutdown().await;
}

/// `redis-cli -p PORT ARGS...`: its stdout.
async fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = within(
        "redis-cli",
        tokio::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output(),
    )
    .await
    .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A redis-server serving TLS only on its TLS port (its plain port answers the test's
/// readiness check), with a certificate for 127.0.0.1 made here; killed on drop.
struct TlsRedis {
    tls: u16,
    cert: std::path::PathBuf,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl TlsRedis {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("wspush-redis-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .unwrap();
        let cert = dir.join("redis.pem");
        let key = dir.join("redis.key");
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
        let (plain, tls) = (free_port(), free_port());
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &plain.to_string(), "--tls-port", &tls.to_string()])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&cert)
            .args(["--tls-auth-clients", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = TlsRedis {
            tls,
            cert,
            dir,
            child,
        };
        within("TLS redis-server up", async {
            while redis_cli(plain, &["PING"]).await.trim() != "PONG" {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        redis
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// issue #17 item 3: `rediss://` with `redis_ca_file` talks TLS to a redis-server that
// serves only TLS on that port: two nodes publish and deliver through it. Without the
// CA (the system store does not know this certificate) or with `redis://` the server
// refuses to start.
#[tokio::test]
async fn nodes_reach_a_tls_redis_with_the_ca_file() {
    let redis = TlsRedis::start().await;
    let (url, ca) = (redis.url(), redis.cert.clone());
    let tls_node = |c: &mut Config| {
        with_history(c, &url);
        c.redis_ca_file = Some(ca.clone());
    };
    let a = TestServer::with(tls_node).await;
    let b = TestServer::with(tls_node).await;
    let mut c = JsonClient::connect(&a.ws("")).await;
    c.cmd(json!({"op": "subscribe", "channel": "secure"})).await;
    assert_eq!(publish(&b, "secure", "over tls").await, 1);
    let p = c.push().await;
    assert_eq!((&p["offset"], &p["data"]), (&json!(1), &json!("over tls")));
    let (_, body) = get(&b.http("/api/history/secure")).await;
    assert_eq!(body["messages"][0]["data"], json!("over tls"), "{body}");

    for (broker, ca) in [
        (redis.url(), None),
        (format!("redis://127.0.0.1:{}", redis.tls), None),
    ] {
        let mut config = Config::default();
        with_history(&mut config, &broker);
        config.redis_ca_file = ca;
        let runtime = wspush::setup::build(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let run = wspush::server::run(
            listener,
            runtime,
            wspush::server::ConsoleMode::Off,
            std::future::pending(),
        );
        let result = within("a refused start", run).await;
        assert!(result.is_err(), "{broker} without the CA must not start");
    }
    a.shutdown().await;
    b.shutdown().await;
}

// issue #17 item 3: the options are validated.
#[test]
fn redis_options_are_validated() {
    for prefix in ["", "a{b}:", "has space"] {
        let c = Config {
            redis_prefix: prefix.into(),
            ..Default::default()
        };
        assert!(c.validate().is_err(), "{prefix:?}");
    }
    let c = Config {
        broker: "redis://a:1,redis://b:2".into(),
        redis_mode: "cluster".parse::<RedisMode>().unwrap(),
        redis_prefix: "staging:".into(),
        ..Default::default()
    };
    assert!(c.validate().is_ok());
    let options = c.redis_options().unwrap();
    assert_eq!(
        (options.urls.len(), options.mode, options.prefix.as_str()),
        (2, RedisMode::Cluster, "staging:")
    );
    assert!("primary".parse::<RedisMode>().is_err());
}
