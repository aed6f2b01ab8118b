//! Issue #14 items 10, 11 and 12 across a cluster: three wspush processes on one real
//! Redis. A node is killed (SIGKILL): the survivors notice its heartbeat expire, and
//! exactly one of them removes its presence members and subscribers, sending
//! `member_removed` / `channel_vacated` webhooks once and `pusher_internal:member_removed`
//! to the members left. Subscription counts and watchlist events span the nodes; the
//! last tests check them on one node (the memory broker).

mod pusher_client;
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

use pusher_client::{data, receiver, signed, Hook, Pusher};

const KEY: &str = "app-key";
const SECRET: &str = "app-secret";
/// The nodes' heartbeat TTL (`node_ttl_ms`): a killed node is reaped within about 4/3 of it.
const NODE_TTL_MS: u64 = 1500;

/// A config file for app 1 (client events, subscription counts, webhooks to `hook`).
fn config_file(tag: &str, hook: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("wspush-p2-{tag}-{}.toml", std::process::id()));
    let text = format!(
        r#"
[[apps]]
id = "1"
key = "{KEY}"
secret = "{SECRET}"
client_events = true
subscription_count = true
webhook_delay_ms = 300
[[apps.webhooks]]
url = "{hook}"
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn nodes(redis: &RedisServer, config: &std::path::Path) -> Vec<Binary> {
    let (url, config) = (redis.url(), config.to_str().unwrap().to_string());
    let ttl = NODE_TTL_MS.to_string();
    let mut out = Vec::new();
    for _ in 0..3 {
        let args = [
            "--no-console",
            "--quiet",
            "--config",
            &config,
            "--broker",
            &url,
            "--node-ttl-ms",
            &ttl,
        ];
        out.push(Binary::serve(&args).await);
    }
    out
}

/// Collects webhook events until `done` holds for what was collected.
async fn hooks_until(
    hooks: &mut tokio::sync::mpsc::UnboundedReceiver<Hook>,
    seen: &mut Vec<String>,
    done: impl Fn(&[String]) -> bool,
) {
    while !done(seen) {
        let hook = within("a webhook", hooks.recv()).await.unwrap();
        assert_eq!(
            hook.signature,
            wspush::pusher::auth::sign(SECRET, hook.body.as_bytes())
        );
        seen.extend(hook.events());
    }
}

fn has(seen: &[String], event: &str) -> bool {
    seen.iter().any(|e| e == event)
}

#[tokio::test]
async fn a_killed_nodes_members_leave_with_member_removed_and_channel_vacated_once() {
    // issue #14 item 11: dead-node members used to leave silently.
    let redis = RedisServer::start().await;
    let (url, mut hooks, _) = receiver(vec![200]).await;
    let config = config_file("dead", &url);
    let mut n = nodes(&redis, &config).await;
    let mut alice = Pusher::connect(&n[0], KEY, SECRET).await;
    alice.presence("presence-x", "alice").await;
    let mut carol = Pusher::connect(&n[2], KEY, SECRET).await;
    carol.presence("presence-x", "carol").await;
    carol.subscribe("solo").await;
    // alice has a second connection on the node that dies: she stays a member.
    let mut alice2 = Pusher::connect(&n[2], KEY, SECRET).await;
    alice2.presence("presence-x", "alice").await;
    let mut seen = Vec::new();
    hooks_until(&mut hooks, &mut seen, |s| {
        [
            "channel_occupied presence-x -",
            "member_added presence-x alice",
            "member_added presence-x carol",
            "channel_occupied solo -",
        ]
        .iter()
        .all(|e| has(s, e))
    })
    .await;
    let added = alice.expect("pusher_internal:member_added").await;
    assert_eq!(
        data(&added),
        json!({"user_id": "carol", "user_info": {"name": "carol"}})
    );

    n[2].child.kill().await.unwrap();
    let removed = alice.expect("pusher_internal:member_removed").await;
    assert_eq!(data(&removed), json!({"user_id": "carol"}));
    let mut after = Vec::new();
    hooks_until(&mut hooks, &mut after, |s| {
        has(s, "member_removed presence-x carol") && has(s, "channel_vacated solo -")
    })
    .await;
    // Both survivors look for dead nodes every ttl/3: past several rounds, nothing more.
    let quiet = Duration::from_millis(3 * NODE_TTL_MS);
    while let Ok(Some(hook)) = tokio::time::timeout(quiet, hooks.recv()).await {
        after.extend(hook.events());
    }
    after.sort();
    assert_eq!(
        after,
        ["channel_vacated solo -", "member_removed presence-x carol"],
        "once"
    );
    // The members left, as any node sees them.
    let (status, users) = signed(
        &n[1],
        "GET",
        "/apps/1/channels/presence-x/users",
        None,
        (KEY, SECRET),
    )
    .await;
    assert_eq!((status, users), (200, json!({"users": [{"id": "alice"}]})));
    let _ = std::fs::remove_file(&config);
}

/// The next `pusher_internal:subscription_count` of `channel`: its count.
async fn count(p: &mut Pusher) -> u64 {
    let ev = p.expect("pusher_internal:subscription_count").await;
    data(&ev)["subscription_count"].as_u64().unwrap()
}

#[tokio::test]
async fn subscription_counts_are_cluster_wide_and_follow_a_dead_node() {
    // issue #14 item 10
    let redis = RedisServer::start().await;
    let (url, _hooks, _) = receiver(vec![200]).await;
    let config = config_file("count", &url);
    let mut n = nodes(&redis, &config).await;
    let mut a = Pusher::connect(&n[0], KEY, SECRET).await;
    let ev = a.subscribe("counted").await;
    assert_eq!(ev["event"], "pusher_internal:subscription_succeeded");
    let ev = a.next().await;
    assert_eq!(ev["event"], "pusher_internal:subscription_count", "{ev}");
    assert_eq!(ev["channel"], "counted");
    assert_eq!(data(&ev), json!({"subscription_count": 1}));
    let mut b = Pusher::connect(&n[1], KEY, SECRET).await;
    b.subscribe("counted").await;
    assert_eq!(count(&mut b).await, 2);
    assert_eq!(count(&mut a).await, 2, "told on the other node too");
    let mut c = Pusher::connect(&n[2], KEY, SECRET).await;
    c.subscribe("counted").await;
    assert_eq!(count(&mut c).await, 3);
    assert_eq!(count(&mut a).await, 3);
    assert_eq!(count(&mut b).await, 3);
    n[2].child.kill().await.unwrap();
    // The reaping node tells the new count (at the end of its debounce window).
    assert_eq!(count(&mut a).await, 2);
    assert_eq!(count(&mut b).await, 2);
    // Apps without subscription_count hear nothing: see pusher_limits (app 1 there).
    let _ = std::fs::remove_file(&config);
}

/// The next watchlist event: (name, user ids).
async fn watch_event(p: &mut Pusher) -> (String, Value) {
    let ev = p.expect("pusher_internal:watchlist_events").await;
    let d = data(&ev);
    let events = d["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{d}");
    (
        events[0]["name"].as_str().unwrap().to_string(),
        events[0]["user_ids"].clone(),
    )
}

#[tokio::test]
async fn watchlist_events_follow_users_on_every_node() {
    // issue #14 item 12
    let redis = RedisServer::start().await;
    let (url, _hooks, _) = receiver(vec![200]).await;
    let config = config_file("watch", &url);
    let mut n = nodes(&redis, &config).await;
    let mut y = Pusher::connect(&n[1], KEY, SECRET).await;
    y.sign_in(json!({"id": "y"})).await;
    let mut w = Pusher::connect(&n[0], KEY, SECRET).await;
    w.sign_in(json!({"id": "w", "watchlist": ["x", "y"]})).await;
    assert_eq!(
        watch_event(&mut w).await,
        ("online".into(), json!(["y"])),
        "at sign-in"
    );
    let mut x = Pusher::connect(&n[2], KEY, SECRET).await;
    x.sign_in(json!({"id": "x"})).await;
    assert_eq!(watch_event(&mut w).await, ("online".into(), json!(["x"])));
    // A second connection of x: no event; its last one leaving: offline.
    let mut x2 = Pusher::connect(&n[0], KEY, SECRET).await;
    x2.sign_in(json!({"id": "x"})).await;
    drop(x);
    drop(x2);
    assert_eq!(watch_event(&mut w).await, ("offline".into(), json!(["x"])));
    // y's node dies: offline from the node that reaps it.
    n[1].child.kill().await.unwrap();
    assert_eq!(watch_event(&mut w).await, ("offline".into(), json!(["y"])));
    let _ = std::fs::remove_file(&config);
}

/// One node (the memory broker): counts for apps that enable them only, later changes
/// within the debounce window told once at its end.
#[tokio::test]
async fn one_node_counts_only_for_apps_that_enable_them_debounced() {
    // issue #14 item 10
    let server = TestServer::with(|c: &mut wspush::config::Config| {
        let mut on = wspush::pusher::apps::parse_flag(&format!("1:{KEY}:{SECRET}")).unwrap();
        on.subscription_count = true;
        let off = wspush::pusher::apps::parse_flag("2:key-off:secret-off").unwrap();
        c.apps = vec![on, off];
    })
    .await;
    let mut a = Pusher::connect(&server, KEY, SECRET).await;
    a.subscribe("room").await;
    assert_eq!(count(&mut a).await, 1, "the first change at once");
    let started = std::time::Instant::now();
    let mut others = Vec::new();
    for _ in 0..3 {
        let mut p = Pusher::connect(&server, KEY, SECRET).await;
        p.subscribe("room").await;
        others.push(p);
    }
    // Three joins within the window: one event, with the count at its end.
    assert_eq!(count(&mut a).await, 4);
    let waited = started.elapsed();
    assert!(waited > Duration::from_secs(2), "debounced: {waited:?}");
    // The app without subscription_count: nothing, while its channel fills.
    let mut x = Pusher::connect(&server, "key-off", "secret-off").await;
    x.subscribe("room").await;
    let mut y = Pusher::connect(&server, "key-off", "secret-off").await;
    y.subscribe("room").await;
    x.send(json!({"event": "pusher:ping", "data": {}})).await;
    let ev = x.next().await;
    assert_eq!(ev["event"], "pusher:pong", "no count event before: {ev}");
    server.shutdown().await;
}

/// One node: a watchlist with numeric ids, and the 100-id limit.
#[tokio::test]
async fn one_node_watchlists_take_numeric_ids_and_at_most_100() {
    // issue #14 item 12
    let server = TestServer::with(|c: &mut wspush::config::Config| {
        c.pusher_app = vec![format!("1:{KEY}:{SECRET}")];
    })
    .await;
    let mut w = Pusher::connect(&server, KEY, SECRET).await;
    let mut list: Vec<Value> = (0..101).map(|i| json!(i)).collect();
    list[0] = json!("seven");
    w.sign_in(json!({"id": "w", "watchlist": list})).await;
    let ev = w.expect("pusher:error").await;
    assert_eq!(
        ev["data"]["message"],
        "a watchlist holds at most 100 user ids; the first 100 are watched"
    );
    let mut u = Pusher::connect(&server, KEY, SECRET).await;
    u.sign_in(json!({"id": "7"})).await;
    assert_eq!(watch_event(&mut w).await, ("online".into(), json!(["7"])));
    let mut last = Pusher::connect(&server, KEY, SECRET).await;
    last.sign_in(json!({"id": "100"})).await; // the 101st: not watched
    let mut seven = Pusher::connect(&server, KEY, SECRET).await;
    seven.sign_in(json!({"id": "seven"})).await;
    assert_eq!(
        watch_event(&mut w).await,
        ("online".into(), json!(["seven"]))
    );
    drop(u);
    assert_eq!(watch_event(&mut w).await, ("offline".into(), json!(["7"])));
    server.shutdown().await;
}
