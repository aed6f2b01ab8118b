//! Issue #12 item 2: what raw clients send reaches the operator's stdout bounded and
//! escaped: the output queue is bounded in bytes (a stdout nobody reads cannot grow
//! memory), each line is cut at 1 KiB with a marker, and control characters are escaped
//! so one client message is exactly one console line. Against the built binary.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use support::*;

async fn send(ws: &mut Ws, msg: Message) {
    within("send", ws.send(msg)).await.unwrap();
}

// issue #12 item 2
#[tokio::test]
async fn megabyte_messages_to_an_unread_stdout_keep_memory_bounded() {
    const MESSAGES: usize = 200;
    // Default flags: upstream lines go to stdout, which this test does not read (after
    // the first line) until the end: the pipe fills and the console writer stalls.
    let server = Binary::serve(&[]).await;
    let pid = server.child.id().unwrap();
    let (mut ws, _) = connect(&server.ws("")).await;
    let base = proc_kib(pid, "VmRSS:");
    let big = "m".repeat(1 << 20);
    for _ in 0..MESSAGES {
        send(&mut ws, Message::text(big.clone())).await;
    }
    within("every message handled", async {
        while metric(server.addr, "wspush_upstream_messages_total").await < MESSAGES as f64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // 200 MiB went to a stdout nobody reads (it held all of it before the fix: +210 MB).
    let rss = proc_kib(pid, "VmRSS:");
    let peak = proc_kib(pid, "VmHWM:");
    eprintln!("RSS base {base} KiB, after {rss} KiB, peak {peak} KiB");
    assert!(
        rss < base + 48 * 1024,
        "RSS grew from {base} KiB to {rss} KiB"
    );
    assert!(
        peak < base + 48 * 1024,
        "peak RSS {peak} KiB vs base {base} KiB"
    );
    let (status, _) = get(&format!("http://{}/healthz", server.addr)).await;
    assert_eq!(status, 200);

    // More lines than 1 MiB of backlog holds: the rest are skipped, and counted.
    let kib2 = "k".repeat(2048);
    for _ in 0..1200 {
        send(&mut ws, Message::text(kib2.clone())).await;
    }
    within("every message handled", async {
        while metric(server.addr, "wspush_upstream_messages_total").await < (MESSAGES + 1200) as f64
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // Reading stdout now: a bounded backlog of cut lines, then the count of skipped ones.
    let mut server = server;
    let mut lines = 0;
    let note = within("the skipped-lines note", async {
        loop {
            let line = server
                .stdout
                .next_line()
                .await
                .unwrap()
                .expect("stdout open");
            lines += 1;
            assert!(lines <= 2 * 1024, "more lines than a 1 MiB backlog holds");
            assert!(line.len() <= 1100, "a {} byte console line", line.len());
            if line.contains("lines skipped, output too slow") {
                return line;
            }
        }
    })
    .await;
    eprintln!("{lines} lines, then {note:?}");
}

// issue #12 item 2
#[tokio::test]
async fn control_characters_are_escaped_and_one_message_is_one_line() {
    let mut server = Binary::serve(&[]).await;
    let (mut ws, id) = connect(&server.ws("")).await;
    send(
        &mut ws,
        Message::text("title \x1b]0;pwned\x07 then\n[c-999] fake\r\tend\u{9b}31m\u{7f}"),
    )
    .await;
    send(&mut ws, Message::binary(vec![0x1b, b'\n', 0, 1, 2])).await;
    send(&mut ws, Message::text("marker")).await;
    let first = server.expect_line(|l| l.starts_with('[')).await;
    assert_eq!(
        first,
        format!(r"[{id}] title \x1b]0;pwned\x07 then\n[c-999] fake\r\tend\u{{9b}}31m\x7f")
    );
    assert!(!first.bytes().any(|b| b == 0x1b || b == 0x07 || b == b'\r'));
    let second = server.expect_line(|_| true).await;
    assert_eq!(second, format!("[{id}] <binary 5 bytes>"));
    let third = server.expect_line(|_| true).await;
    assert_eq!(third, format!("[{id}] marker"), "no forged line in between");
}

// issue #12 item 2
#[tokio::test]
async fn a_long_message_is_one_line_cut_at_a_char_boundary_with_a_marker() {
    let mut server = Binary::serve(&[]).await;
    let (mut ws, id) = connect(&server.ws("")).await;
    // 1 + 2 x 51,200 = 102,401 bytes: 1 KiB falls in the middle of an 'é'.
    let long = format!("x{}", "é".repeat(51_200));
    send(&mut ws, Message::text(long)).await;
    // Escapes count as what is shown: 100 KiB of ESC shows as 256 `\x1b`.
    send(&mut ws, Message::text("\x1b".repeat(100 * 1024))).await;
    send(&mut ws, Message::text("marker")).await;

    let line = server.expect_line(|l| l.starts_with('[')).await;
    let shown = format!("x{}", "é".repeat(511));
    assert_eq!(shown.len(), 1023);
    assert_eq!(line, format!("[{id}] {shown}… [+101378 bytes]"));
    assert!(line.len() <= 1100, "{} bytes", line.len());

    let line = server.expect_line(|_| true).await;
    assert_eq!(
        line,
        format!(
            "[{id}] {}… [+{} bytes]",
            r"\x1b".repeat(256),
            100 * 1024 - 256
        )
    );
    let line = server.expect_line(|_| true).await;
    assert_eq!(line, format!("[{id}] marker"));
}
