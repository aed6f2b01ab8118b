//! issue #18 item 2: adaptive write coalescing, end to end (a loose timing check; the
//! decision itself is unit-tested in src/hub/coalesce.rs and src/hub/pace.rs).

mod support;

use std::time::{Duration, Instant};

use support::{connect, next_text, publish, Server, TestServer};

// issue #18 item 2: with a long coalescing window (1 s, so a 250 ms tick), a channel
// publishing more often than the window used to hold every message after the first
// until the next tick. With the core idle, each message now goes out at once.
#[tokio::test]
async fn at_a_low_rate_each_message_goes_out_without_waiting_for_the_tick() {
    let server = TestServer::with(|c| c.write_coalesce_ms = 1000.into()).await;
    let (mut ws, _) = connect(&server.ws("?channels=news")).await;
    let mut slowest = Duration::ZERO;
    for i in 0..8 {
        let start = Instant::now();
        publish(&server, "news", &format!("m{i}")).await;
        assert_eq!(next_text(&mut ws).await, format!("m{i}"));
        slowest = slowest.max(start.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A tick is 250 ms; publishing and receiving on a debug build take a few ms.
    assert!(
        slowest < Duration::from_millis(150),
        "a message waited {slowest:?}: it was held for the coalescing tick"
    );
}
