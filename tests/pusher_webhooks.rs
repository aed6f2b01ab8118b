//! Issue #14 item 11: webhooks as Pusher sends them. `channel_vacated` and
//! `member_removed` wait `webhook_delay_ms`, and a re-join within it cancels the pair (a
//! page reload does not flap); events are batched with `time_ms`, signed with
//! `X-Pusher-Key` / `X-Pusher-Signature`; 5xx answers are retried a bounded number of
//! times, 4xx answers are not. A real HTTP receiver in the test.

mod pusher_client;
mod support;

use std::time::{Duration, Instant};

use support::*;
use wspush::config::Config;
use wspush::pusher::apps::{parse_flag, Webhook};
use wspush::pusher::auth;

use pusher_client::{receiver, Hook, Pusher};

const KEY: &str = "hook-key";
const SECRET: &str = "hook-secret";

/// App 1 with one webhook to `url`, batched over `batch_ms`, leaves delayed `delay_ms`.
fn app(url: &str, batch_ms: u64, delay_ms: u64) -> impl FnOnce(&mut Config) {
    let url = url.to_string();
    move |c: &mut Config| {
        let mut app = parse_flag(&format!("1:{KEY}:{SECRET}")).unwrap();
        app.webhooks = vec![Webhook {
            url,
            events: vec![],
            batch_ms: batch_ms.into(),
        }];
        app.webhook_delay_ms = delay_ms.into();
        c.apps = vec![app];
    }
}

async fn next_hook(hooks: &mut tokio::sync::mpsc::UnboundedReceiver<Hook>) -> Hook {
    let hook = within("a webhook", hooks.recv()).await.unwrap();
    assert_eq!(hook.key, KEY);
    assert_eq!(
        hook.signature,
        auth::sign(SECRET, hook.body.as_bytes()),
        "signed body"
    );
    let time_ms = hook.json()["time_ms"].as_u64().unwrap();
    assert!(time_ms > 1_600_000_000_000, "{time_ms}");
    hook
}

#[tokio::test]
async fn leaves_wait_the_delay_then_come_batched_and_signed() {
    // issue #14 item 11
    let (url, mut hooks, _) = receiver(vec![200]).await;
    let server = TestServer::with(app(&url, 200, 1000)).await;
    let mut a = Pusher::connect(&server, KEY, SECRET).await;
    a.presence("presence-w", "u1").await;
    let joined = next_hook(&mut hooks).await;
    assert_eq!(
        joined.events(),
        [
            "channel_occupied presence-w -",
            "member_added presence-w u1"
        ],
        "one batch"
    );
    let left_at = Instant::now();
    drop(a);
    let left = next_hook(&mut hooks).await;
    let waited = left.at - left_at;
    assert_eq!(
        left.events(),
        [
            "member_removed presence-w u1",
            "channel_vacated presence-w -"
        ],
        "one batch"
    );
    assert!(
        waited >= Duration::from_millis(1000),
        "sent after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(5000),
        "sent after {waited:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_rejoin_within_the_delay_cancels_the_leave_and_the_join() {
    // issue #14 item 11: a page reload (close, then the same user joins again) sends
    // neither member_removed/channel_vacated nor member_added/channel_occupied again.
    let (url, mut hooks, _) = receiver(vec![200]).await;
    let server = TestServer::with(app(&url, 0, 1500)).await;
    let mut a = Pusher::connect(&server, KEY, SECRET).await;
    a.presence("presence-r", "u1").await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(next_hook(&mut hooks).await.events());
    }
    drop(a);
    let mut b = Pusher::connect(&server, KEY, SECRET).await;
    let ev = b.presence("presence-r", "u1").await;
    assert_eq!(ev["event"], "pusher_internal:subscription_succeeded");
    // Past the delay, a second user's join proves the worker ran: it comes alone.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut c = Pusher::connect(&server, KEY, SECRET).await;
    c.presence("presence-r", "u2").await;
    assert_eq!(
        next_hook(&mut hooks).await.events(),
        ["member_added presence-r u2"]
    );
    // Both leave: the delayed pair comes, once each.
    drop(b);
    drop(c);
    let mut last = Vec::new();
    while !last.contains(&"channel_vacated presence-r -".to_string()) {
        last.extend(next_hook(&mut hooks).await.events());
    }
    last.sort();
    assert_eq!(
        last,
        [
            "channel_vacated presence-r -",
            "member_removed presence-r u1",
            "member_removed presence-r u2"
        ]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_500_is_retried_a_bounded_number_of_times_and_a_400_never() {
    // issue #14 item 11: 5 attempts (backoff 0.5, 1, 2, 4 s), then given up.
    let (url, mut hooks, calls) = receiver(vec![500]).await;
    let server = TestServer::with(app(&url, 0, 0)).await;
    let mut a = Pusher::connect(&server, KEY, SECRET).await;
    a.subscribe("news").await;
    let first = next_hook(&mut hooks).await;
    let mut gaps = Vec::new();
    let mut prev = first.at;
    for _ in 0..4 {
        let again = next_hook(&mut hooks).await;
        assert_eq!(again.body, first.body, "the same request again");
        gaps.push((again.at - prev).as_millis() as u64);
        prev = again.at;
    }
    for (gap, want) in gaps.iter().zip([500, 1000, 2000, 4000]) {
        assert!(*gap >= want && *gap < want + 3000, "backoff {gaps:?}");
    }
    // No sixth attempt: it would come 8 s after the fifth.
    assert!(
        tokio::time::timeout(Duration::from_secs(9), hooks.recv())
            .await
            .is_err(),
        "given up after 5 attempts"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 5);
    drop(a);
    server.shutdown().await;

    let (url, mut hooks, calls) = receiver(vec![400]).await;
    let server = TestServer::with(app(&url, 0, 0)).await;
    let mut a = Pusher::connect(&server, KEY, SECRET).await;
    a.subscribe("news").await;
    let first = next_hook(&mut hooks).await;
    assert_eq!(first.events(), ["channel_occupied news -"]);
    // A later event's request comes next: the refused one was not sent again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    drop(a);
    let second = next_hook(&mut hooks).await;
    assert_eq!(second.events(), ["channel_vacated news -"]);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    server.shutdown().await;
}
