//! Redis Cluster and Sentinel with real redis-server processes (issue #17 item 3): a
//! 3-master cluster carrying publishes and history between two nodes, through a slot
//! migration, whose pub/sub survives losing the Redis node it listened on; the same
//! over TLS; a Sentinel failover after which clients are told `history_gone` with a
//! new epoch, never silently.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use wspush::broker::RedisMode;
use wspush::config::Config;
use wspush::namespace::{Access, Namespace};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Redis processes of one test, in a directory of their own; all killed on drop.
struct Procs {
    dir: PathBuf,
    children: Vec<(u16, Child)>,
    /// The CA for `redis-cli --tls` when the servers serve TLS only.
    tls: Option<PathBuf>,
}

impl Procs {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wspush-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Procs {
            dir,
            children: Vec::new(),
            tls: None,
        }
    }

    /// Starts `redis-server` on `port` with `args` and waits for its PING.
    async fn start(&mut self, port: u16, args: &[String]) {
        self.launch(port, port, args).await;
    }

    /// Starts a `redis-server` that serves TLS only (`args` name `port` as its TLS port).
    async fn start_tls_only(&mut self, port: u16, args: &[String]) {
        self.launch(port, 0, args).await;
    }

    async fn launch(&mut self, port: u16, plain_port: u16, args: &[String]) {
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(args)
            .args(["--port", &plain_port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.children.push((port, child));
        let ca = self.tls.clone();
        within("redis-server PING", async {
            while cli_with(ca.as_deref(), port, &["PING"]).await.trim() != "PONG" {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// SIGKILLs the process on `port`.
    fn kill(&mut self, port: u16) {
        if let Some(i) = self.children.iter().position(|(p, _)| *p == port) {
            let (_, mut child) = self.children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -p PORT ARGS...`: its stdout.
async fn cli(port: u16, args: &[&str]) -> String {
    cli_with(None, port, args).await
}

/// `redis-cli [--tls --cacert CA] -p PORT ARGS...`: its stdout.
async fn cli_with(ca: Option<&std::path::Path>, port: u16, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new("redis-cli");
    if let Some(ca) = ca {
        cmd.arg("--tls").arg("--cacert").arg(ca);
    }
    let out = within(
        "redis-cli",
        cmd.args(["-p", &port.to_string()]).args(args).output(),
    )
    .await
    .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits up to `secs` for `check`.
async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    secs: u64,
    check: impl Fn() -> F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn node_config(c: &mut Config, broker: String, mode: RedisMode) {
    c.broker = broker;
    c.redis_mode = mode;
    c.namespaces = vec![Namespace {
        prefix: "".into(),
        history_size: 100,
        history_ttl: None,
        presence: false,
        anonymous: Access::Publish,
    }];
}

/// Publishes, retrying for up to `secs` while the broker answers 503; the body of the
/// first 200, or `None`.
async fn publish_within(node: &TestServer, channel: &str, data: &str, secs: u64) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let (status, body) = post(
            &node.http("/api/publish"),
            json!({"channel": channel, "data": data}),
        )
        .await;
        if status == 200 {
            return Some(body);
        }
        assert_eq!(body["error"]["code"], json!("broker_unavailable"), "{body}");
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// issue #17 item 3: a 3-master Redis Cluster: offsets, delivery and history across two
// nodes for channels spread over every master (a channel's keys and its epoch share a
// slot: no CROSSSLOT); then the master the subscribing node listened on is killed, and
// channels on the surviving masters still reach its clients. A slot migration before
// that keeps a channel's life and delivery.
#[tokio::test]
async fn two_nodes_over_a_three_master_redis_cluster() {
    let mut procs = Procs::new("rcluster");
    let ports = [free_port(), free_port(), free_port()];
    for port in ports {
        let args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &format!("nodes-{port}.conf"),
            "--cluster-node-timeout",
            "1000",
            "--cluster-require-full-coverage",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        procs.start(port, &args).await;
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addrs.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let out = cli(ports[0], &create).await;
    assert!(out.contains("All 16384 slots covered"), "{out}");
    for port in ports {
        until("cluster_state:ok", 10, || async move {
            cli(port, &["CLUSTER", "INFO"])
                .await
                .contains("cluster_state:ok")
        })
        .await;
    }
    let broker: String = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let a = TestServer::with(|c| node_config(c, broker.clone(), RedisMode::Cluster)).await;
    let b = TestServer::with(|c| node_config(c, broker.clone(), RedisMode::Cluster)).await;

    let channels: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    let mut x = JsonClient::connect(&a.ws("")).await;
    for ch in &channels {
        let r = x.cmd(json!({"op": "subscribe", "channel": ch})).await;
        assert_eq!(r["ok"], json!(true), "{r}");
    }
    for round in 1..=2 {
        for ch in &channels {
            assert_eq!(publish(&b, ch, &format!("{ch}-{round}")).await, round);
        }
    }
    let mut got: Vec<(String, u64, Value)> = Vec::new();
    for _ in 0..40 {
        let p = x.push().await;
        got.push((
            p["channel"].as_str().unwrap().to_string(),
            p["offset"].as_u64().unwrap(),
            p["data"].clone(),
        ));
    }
    for ch in &channels {
        let mine: Vec<(u64, Value)> = got
            .iter()
            .filter(|(c, _, _)| c == ch)
            .map(|(_, o, d)| (*o, d.clone()))
            .collect();
        assert_eq!(
            mine,
            vec![(1, json!(format!("{ch}-1"))), (2, json!(format!("{ch}-2")))]
        );
        let (_, h) = get(&a.http(&format!("/api/history/{ch}"))).await;
        assert_eq!(h["offset"], json!(2), "{h}");
        assert_eq!(h["messages"].as_array().unwrap().len(), 2, "{h}");
    }
    // The channels really are spread over the three masters.
    for port in ports {
        let n: u64 = cli(port, &["DBSIZE"]).await.trim().parse().unwrap();
        assert!(n > 0, "master {port} holds no key");
    }

    // A slot migration (as `redis-cli --cluster reshard` does it, for one slot): the
    // channel's keys and its epoch move together to another master; its life goes on
    // (same epoch, next offset) and delivery with it.
    let mut owner = None;
    let mut slot = String::new();
    for port in ports {
        let key = cli(port, &["--scan", "--pattern", "*:pos:c0"]).await;
        if !key.trim().is_empty() {
            slot = cli(port, &["CLUSTER", "KEYSLOT", key.trim()])
                .await
                .trim()
                .to_string();
            owner = Some(port);
        }
    }
    let from = owner.expect("a master holds c0's slot");
    let to = *ports
        .iter()
        .find(|p| **p != from && **p != ports[0])
        .unwrap();
    let id = |port: u16| async move { cli(port, &["CLUSTER", "MYID"]).await.trim().to_string() };
    let (from_id, to_id) = (id(from).await, id(to).await);
    let (_, before) = get(&a.http("/api/history/c0")).await;
    cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]).await;
    cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]).await;
    let keys = cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "1000"]).await;
    let mut migrate = vec![
        "MIGRATE".to_string(),
        "127.0.0.1".into(),
        to.to_string(),
        "".into(),
        "0".into(),
        "5000".into(),
        "KEYS".into(),
    ];
    migrate.extend(keys.lines().map(str::to_string));
    let migrate: Vec<&str> = migrate.iter().map(String::as_str).collect();
    assert_eq!(cli(from, &migrate).await.trim(), "OK");
    for port in ports {
        cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]).await;
    }
    assert_eq!(
        cli(to, &["CLUSTER", "COUNTKEYSINSLOT", &slot]).await.trim(),
        keys.lines().count().to_string()
    );
    let body = publish_within(&b, "c0", "c0-moved", 5)
        .await
        .expect("c0 after the move");
    assert_eq!(body["offset"], json!(3), "{body}");
    let p = x.push().await;
    assert_eq!((&p["channel"], &p["offset"]), (&json!("c0"), &json!(3)));
    let (_, after) = get(&a.http("/api/history/c0")).await;
    assert_eq!(
        after["epoch"], before["epoch"],
        "the life goes on after a migration"
    );
    assert_eq!(after["messages"].as_array().unwrap().len(), 3, "{after}");

    // Node a listens on the first master: kill it. Its pub/sub moves to another master;
    // channels whose slots live on the survivors go on (the others answer 503).
    procs.kill(ports[0]);
    let mut delivered = Vec::new();
    for ch in &channels {
        let next = if ch == "c0" { 4 } else { 3 };
        if let Some(body) = publish_within(&b, ch, &format!("{ch}-{next}"), 3).await {
            assert_eq!(body["offset"], json!(next), "{ch}: {body}");
            delivered.push(ch.clone());
        }
    }
    assert!(
        !delivered.is_empty() && delivered.len() < channels.len(),
        "{delivered:?}"
    );
    let mut seen = Vec::new();
    while seen.len() < delivered.len() {
        let p = x.push().await;
        let next = if p["channel"] == json!("c0") { 4 } else { 3 };
        assert_eq!(p["offset"], json!(next), "{p}");
        seen.push(p["channel"].as_str().unwrap().to_string());
    }
    seen.sort();
    delivered.sort();
    assert_eq!(seen, delivered);
    a.shutdown().await;
    b.shutdown().await;
}

// issue #17 item 3: Sentinel (1 master, 1 replica, 1 sentinel): the master is killed,
// the replica promoted; nodes follow the new master, and a client of the old master's
// life is closed with 1012 (resync) and told `history_gone` with a new epoch when it
// asks to recover, never given new messages under the old epoch's offsets.
#[tokio::test]
async fn a_sentinel_failover_is_followed_and_clients_are_told() {
    let mut procs = Procs::new("rsentinel");
    let (master, replica, sentinel) = (free_port(), free_port(), free_port());
    let plain: Vec<String> = ["--save", "", "--appendonly", "no"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    procs.start(master, &plain).await;
    let mut replica_args = plain.clone();
    replica_args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
    procs.start(replica, &replica_args).await;
    let conf = procs.dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "sentinel monitor mymaster 127.0.0.1 {master} 1\n\
             sentinel down-after-milliseconds mymaster 1000\n\
             sentinel failover-timeout mymaster 5000\n"
        ),
    )
    .unwrap();
    procs
        .start(
            sentinel,
            &[conf.to_string_lossy().into_owned(), "--sentinel".into()],
        )
        .await;
    until("replica linked", 10, || async move {
        cli(replica, &["INFO", "replication"])
            .await
            .contains("master_link_status:up")
    })
    .await;
    let broker = format!("redis://127.0.0.1:{sentinel}");
    let a = TestServer::with(|c| node_config(c, broker.clone(), RedisMode::Sentinel)).await;
    let b = TestServer::with(|c| node_config(c, broker.clone(), RedisMode::Sentinel)).await;

    let mut c = JsonClient::connect(&a.ws("")).await;
    let r = c.cmd(json!({"op": "subscribe", "channel": "s:1"})).await;
    let old_epoch = r["epoch"].as_str().unwrap().to_string();
    for i in 1..=3 {
        assert_eq!(publish(&b, "s:1", &format!("before-{i}")).await, i);
    }
    for i in 1..=3 {
        assert_eq!(c.push().await["offset"], json!(i));
    }

    procs.kill(master);
    until("the replica promoted", 30, || async move {
        cli(
            sentinel,
            &["SENTINEL", "get-master-addr-by-name", "mymaster"],
        )
        .await
        .contains(&replica.to_string())
    })
    .await;
    let body = publish_within(&b, "s:1", "after", 20)
        .await
        .expect("publishes reach the new master");
    // A new life: offsets start over, under a new epoch.
    assert_eq!(body["offset"], json!(1), "{body}");
    assert_eq!(
        close_code(&mut c.ws).await,
        1012,
        "the client is told to resync"
    );

    let mut again = JsonClient::connect(&a.ws("")).await;
    let r = again
        .cmd(json!({"op": "subscribe", "channel": "s:1", "since": 3, "epoch": old_epoch}))
        .await;
    assert_eq!(r["error"]["code"], json!("history_gone"), "{r}");
    let new_epoch = r["error"]["epoch"].clone();
    assert_ne!(new_epoch, json!(old_epoch));
    let r = again
        .cmd(json!({"op": "subscribe", "channel": "s:1"}))
        .await;
    assert_eq!(
        (r["offset"].clone(), r["epoch"].clone()),
        (json!(1), new_epoch)
    );
    let (_, h) = get(&b.http("/api/history/s:1")).await;
    assert_eq!(h["messages"][0]["data"], json!("after"), "{h}");
    a.shutdown().await;
    b.shutdown().await;
}

// issue #17 item 3: a Redis Cluster serving TLS only (`tls-cluster yes`, plain port 0),
// with a certificate made here: nodes reach it with `rediss://` and `redis_ca_file`.
#[tokio::test]
async fn two_nodes_over_a_tls_redis_cluster() {
    let mut procs = Procs::new("rcluster-tls");
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let (cert, key) = (procs.dir.join("redis.pem"), procs.dir.join("redis.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    procs.tls = Some(cert.clone());
    let ports = [free_port(), free_port(), free_port()];
    for port in ports {
        let args: Vec<String> = vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            cert.to_string_lossy().into_owned(),
            "--tls-key-file".into(),
            key.to_string_lossy().into_owned(),
            "--tls-ca-cert-file".into(),
            cert.to_string_lossy().into_owned(),
            "--tls-auth-clients".into(),
            "no".into(),
            "--tls-cluster".into(),
            "yes".into(),
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-config-file".into(),
            format!("nodes-{port}.conf"),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
        ];
        procs.start_tls_only(port, &args).await;
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addrs.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let out = cli_with(Some(&cert), ports[0], &create).await;
    assert!(out.contains("All 16384 slots covered"), "{out}");
    for port in ports {
        let cert = cert.clone();
        until("cluster_state:ok", 10, || {
            let cert = cert.clone();
            async move {
                cli_with(Some(&cert), port, &["CLUSTER", "INFO"])
                    .await
                    .contains("cluster_state:ok")
            }
        })
        .await;
    }
    let broker: String = ports
        .iter()
        .map(|p| format!("rediss://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let tls_node = |c: &mut Config| {
        node_config(c, broker.clone(), RedisMode::Cluster);
        c.redis_ca_file = Some(cert.clone());
    };
    let a = TestServer::with(tls_node).await;
    let b = TestServer::with(tls_node).await;
    let mut x = JsonClient::connect(&a.ws("")).await;
    let channels: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
    for ch in &channels {
        let r = x.cmd(json!({"op": "subscribe", "channel": ch})).await;
        assert_eq!(r["ok"], json!(true), "{r}");
    }
    for ch in &channels {
        assert_eq!(publish(&b, ch, ch).await, 1);
        let p = x.push().await;
        assert_eq!((&p["channel"], &p["offset"]), (&json!(ch), &json!(1)));
        let (_, h) = get(&a.http(&format!("/api/history/{ch}"))).await;
        assert_eq!(h["messages"][0]["data"], json!(ch), "{h}");
    }
    a.shutdown().await;
    b.shutdown().await;
}
