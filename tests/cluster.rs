//! Cluster mode on Redis (issue #5): three nodes acting as one, and the faults: Redis
//! unavailable, a node killed with SIGKILL, Redis restarted with empty memory.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use wspush::config::Config;
use wspush::namespace::{Access, Namespace};

fn cluster_config(c: &mut Config, redis: &str) {
    c.broker = redis.to_string();
    c.namespaces = vec![Namespace {
        prefix: "".into(),
        history_size: 10_000,
        history_ttl: None,
        presence: true,
        anonymous: Access::Publish,
    }];
}

async fn node(redis: &str) -> TestServer {
    let redis = redis.to_string();
    TestServer::with(move |c| cluster_config(c, &redis)).await
}

/// Publishes as soon as the node's broker answers again (503 `broker_unavailable`
/// publishes nothing, so retrying is safe); the offset.
async fn publish_once_redis_is_back(node: &TestServer, channel: &str, data: &str) -> u64 {
    within("a publish after Redis is back", async {
        loop {
            let (status, body) = post(
                &node.http("/api/publish"),
                json!({"channel": channel, "data": data}),
            )
            .await;
            if status == 200 {
                return body["offset"].as_u64().unwrap();
            }
            assert_eq!(body["error"]["code"], json!("broker_unavailable"), "{body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// The next pushed message, skipping presence events.
async fn next_data(c: &mut JsonClient) -> Value {
    loop {
        let p = c.push().await;
        if p.get("event").is_none() {
            return p;
        }
    }
}

/// Reads pushes of `channel` until offset `upto`; returns the offsets seen.
async fn offsets_until(c: &mut JsonClient, upto: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.last().copied().unwrap_or(0) < upto {
        let p = c.push().await;
        if p.get("offset").is_some() {
            seen.push(p["offset"].as_u64().unwrap());
        }
    }
    seen
}

#[tokio::test]
async fn three_nodes_act_as_one() {
    let redis = RedisServer::start().await;
    let nodes = [
        node(&redis.url()).await,
        node(&redis.url()).await,
        node(&redis.url()).await,
    ];
    // Two JSON clients and one raw client per node, all on one channel.
    let mut clients = Vec::new();
    let mut raws = Vec::new();
    for n in &nodes {
        for _ in 0..2 {
            let mut c = JsonClient::connect(&n.ws("")).await;
            let r = c
                .cmd(json!({"op": "subscribe", "channel": "all:news"}))
                .await;
            assert_eq!(r["ok"], json!(true), "{r}");
            clients.push(c);
        }
        raws.push(connect(&n.ws("?channels=all:news")).await.0);
    }
    // Publishes through each node's API and through a client on each node.
    let mut expected = Vec::new();
    for round in 0..5 {
        for (i, n) in nodes.iter().enumerate() {
            let text = format!("api-{round}-{i}");
            let offset = publish(n, "all:news", &text).await;
            expected.push((offset, json!(text)));
        }
        for i in 0..3 {
            let text = format!("client-{round}-{i}");
            let r = clients[i * 2]
                .cmd(json!({"op": "publish", "channel": "all:news", "data": text}))
                .await;
            expected.push((r["offset"].as_u64().unwrap(), json!(text)));
        }
    }
    expected.sort_by_key(|(o, _)| *o);
    let offsets: Vec<u64> = expected.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        offsets,
        (1..=30).collect::<Vec<u64>>(),
        "one offset sequence across nodes"
    );
    for c in clients.iter_mut() {
        for (offset, data) in &expected {
            let p = next_data(c).await;
            assert_eq!(
                (p["offset"].as_u64().unwrap(), &p["data"]),
                (*offset, data),
                "client {}",
                c.id
            );
        }
    }
    for raw in raws.iter_mut() {
        for (_, data) in &expected {
            assert_eq!(&json!(next_text(raw).await), data);
        }
    }

    // Presence across nodes: a member on node 2 is seen from node 0, its join and leave too.
    let mut watcher = JsonClient::connect(&nodes[0].ws("")).await;
    watcher
        .cmd(json!({"op": "subscribe", "channel": "room:1"}))
        .await;
    let mut member = JsonClient::connect(&nodes[2].ws("")).await;
    member
        .cmd(json!({"op": "subscribe", "channel": "room:1"}))
        .await;
    assert_eq!(
        watcher.push().await,
        json!({"channel": "room:1", "event": "join", "client": member.id})
    );
    // (The watcher saw no other join: it is alone in room:1 besides `member`.)
    let (_, body) = get(&nodes[1].http("/api/presence/room:1")).await;
    let ids: Vec<&str> = body["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&member.id.as_str()) && ids.contains(&watcher.id.as_str()),
        "{body}"
    );
    drop(member);
    assert_eq!(watcher.push().await["event"], json!("leave"));

    // send to a client id routed to the node that holds it.
    let (mut target, target_id) = connect(&nodes[2].ws("")).await;
    let (status, body) = post(
        &nodes[0].http("/api/send"),
        json!({"client": target_id, "data": "found you"}),
    )
    .await;
    assert_eq!((status, body["delivered"].clone()), (200, json!(1)));
    assert_eq!(next_text(&mut target).await, "found you");
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn redis_unavailable_fails_publishes_clearly_and_nothing_is_lost_after() {
    let mut redis = RedisServer::start().await;
    let a = node(&redis.url()).await;
    let b = node(&redis.url()).await;
    let mut c = JsonClient::connect(&a.ws("")).await;
    c.cmd(json!({"op": "subscribe", "channel": "f:1"})).await;
    for i in 1..=3 {
        publish(&b, "f:1", &format!("before-{i}")).await;
    }
    assert_eq!(offsets_until(&mut c, 3).await, vec![1, 2, 3]);

    redis.stop(true).await;
    let (status, body) = post(
        &b.http("/api/publish"),
        json!({"channel": "f:1", "data": "while down"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (503, json!("broker_unavailable")),
        "{body}"
    );
    let (status, body) = get(&a.http("/healthz")).await;
    assert_eq!(
        (status, body["broker"].clone()),
        (503, json!("unavailable"))
    );
    let r = c
        .cmd(json!({"op": "publish", "channel": "f:1", "data": "x"}))
        .await;
    assert_eq!(r["error"]["code"], json!("broker_unavailable"));

    redis.restart().await;
    // As soon as b can publish again, publish: a may not have re-subscribed yet, and
    // must recover these from history.
    let offset = publish_once_redis_is_back(&b, "f:1", "after-1").await;
    assert_eq!(offset, 4, "offsets continue after the outage");
    for i in 2..=5 {
        publish(&b, "f:1", &format!("after-{i}")).await;
    }
    let seen = offsets_until(&mut c, 8).await;
    assert_eq!(
        seen,
        vec![4, 5, 6, 7, 8],
        "no gap, no duplicate after the outage"
    );
    within("healthz back", async {
        while get(&a.http("/healthz")).await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_killed_node_s_clients_recover_on_another_node() {
    let redis = RedisServer::start().await;
    let dir = std::env::temp_dir().join(format!("wspush-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("cluster.toml");
    std::fs::write(
        &config,
        "[[namespaces]]\nprefix = \"\"\nhistory_size = 10000\npresence = true\n",
    )
    .unwrap();
    let args = [
        "--broker",
        &redis.url(),
        "--config",
        config.to_str().unwrap(),
        "--quiet",
        "--no-console",
    ];
    let survivor = Binary::serve(&args).await;
    let mut victim = Binary::serve(&args).await;
    let survivor_api = format!("http://{}/api/publish", survivor.addr);

    let mut c = JsonClient::connect(&victim.ws("")).await;
    let r = c.cmd(json!({"op": "subscribe", "channel": "k:1"})).await;
    let epoch = r["epoch"].as_str().unwrap().to_string();
    let publisher = tokio::spawn(async move {
        let http = reqwest::Client::new();
        for i in 1..=300u64 {
            let r = http
                .post(&survivor_api)
                .json(&json!({"channel": "k:1", "data": i}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    let mut seen = offsets_until(&mut c, 50).await;
    victim.child.start_kill().unwrap();
    let _ = victim.child.wait().await;
    // The connection dies with the node; reconnect elsewhere and recover.
    drop(c);
    let mut c = JsonClient::connect(&survivor.ws("")).await;
    let r = c
        .cmd(json!({"op": "subscribe", "channel": "k:1", "since": seen.last().unwrap(), "epoch": epoch}))
        .await;
    assert_eq!(r["ok"], json!(true), "{r}");
    seen.extend(offsets_until(&mut c, 300).await);
    within("publisher", publisher).await.unwrap();
    assert_eq!(seen, (1..=300).collect::<Vec<u64>>());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn redis_restarted_empty_starts_a_new_epoch_that_clients_detect() {
    let mut redis = RedisServer::start().await;
    let a = node(&redis.url()).await;
    let mut c = JsonClient::connect(&a.ws("")).await;
    let r = c.cmd(json!({"op": "subscribe", "channel": "e:1"})).await;
    let old_epoch = r["epoch"].as_str().unwrap().to_string();
    for i in 1..=5 {
        publish(&a, "e:1", &format!("old-{i}")).await;
    }
    assert_eq!(offsets_until(&mut c, 5).await, vec![1, 2, 3, 4, 5]);

    redis.stop(false).await;
    redis.restart().await;
    let offset = publish_once_redis_is_back(&a, "e:1", "new-1").await;
    assert_eq!(offset, 1, "Redis lost everything: offsets restart...");
    // ...and the live JSON subscriber is told to resync instead of silently seeing offset 1 again.
    assert_eq!(close_code(&mut c.ws).await, 1012);
    let mut c = JsonClient::connect(&a.ws("")).await;
    let r = c
        .cmd(json!({"op": "subscribe", "channel": "e:1", "since": 5, "epoch": old_epoch}))
        .await;
    assert_eq!(r["error"]["code"], json!("history_gone"), "{r}");
    let new_epoch: Value = r["error"]["epoch"].clone();
    assert_ne!(new_epoch, json!(old_epoch));
    let r = c.cmd(json!({"op": "subscribe", "channel": "e:1"})).await;
    assert_eq!(
        (r["offset"].clone(), r["epoch"].clone()),
        (json!(1), new_epoch)
    );
    a.shutdown().await;
}
