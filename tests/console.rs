//! The operator console drives the real binary's stdin; SIGTERM shuts it down with 1001
//! and exit 0 (issue #2).

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn console_commands_reach_the_right_clients() {
    let mut server = Binary::serve(&[]).await;
    let (mut news, news_id) = connect(&server.ws("?channels=news")).await;
    let (mut sports, sports_id) = connect(&server.ws("?channels=sports")).await;

    server.type_line("hello everyone").await;
    assert_eq!(next_text(&mut news).await, "hello everyone");
    assert_eq!(next_text(&mut sports).await, "hello everyone");

    server.type_line("#news breaking story").await;
    assert_eq!(next_text(&mut news).await, "breaking story");
    server
        .expect_line(|l| l.contains("published to #news"))
        .await;

    server
        .type_line(&format!("@{sports_id} just for you"))
        .await;
    assert_eq!(next_text(&mut sports).await, "just for you");
    server
        .expect_line(|l| l == format!("sent to {sports_id}"))
        .await;

    // Neither got the other's message: their next frames are the marker.
    server.type_line("marker").await;
    assert_eq!(next_text(&mut news).await, "marker");
    assert_eq!(next_text(&mut sports).await, "marker");

    server.type_line("/clients").await;
    server.expect_line(|l| l == "2 clients").await;
    server
        .expect_line(|l| l.trim_start().starts_with(&news_id) && l.contains("[news]"))
        .await;
    server.type_line("/channels").await;
    server.expect_line(|l| l == "2 channels").await;
    server
        .expect_line(|l| l.trim() == "#news 1 subscribers")
        .await;
    server.type_line("@c-999999 anyone?").await;
    server
        .expect_line(|l| l == "error: no client c-999999")
        .await;
    server.type_line("/bogus").await;
    server
        .expect_line(|l| l.starts_with("error: unknown command /bogus"))
        .await;
    server.type_line("/help").await;
    server.expect_line(|l| l.contains("#channel text")).await;

    // Text from a client shows on the console as [id] text.
    send_text(&mut news, "hi operator").await;
    server
        .expect_line(|l| l == format!("[{news_id}] hi operator"))
        .await;

    // Closing stdin does not stop the server.
    drop(server.stdin.take());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = post(
        &format!("http://{}/api/publish", server.addr),
        serde_json::json!({"channel": "news", "data": "after stdin closed"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut news).await, "after stdin closed");

    // SIGTERM: every client gets 1001, the process exits 0.
    let pid = server.child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert_eq!(close_code(&mut news).await, 1001);
    assert_eq!(close_code(&mut sports).await, 1001);
    let status = within("exit", server.child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn quit_command_shuts_down_gracefully() {
    let mut server = Binary::serve(&[]).await;
    let (mut ws, _) = connect(&server.ws("")).await;
    server.type_line("/quit").await;
    assert_eq!(close_code(&mut ws).await, 1001);
    let status = within("exit", server.child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_closed_stdin_from_the_start_does_not_stop_the_server() {
    let mut server = Binary::serve(&[]).await;
    drop(server.stdin.take());
    let (mut ws, _) = connect(&server.ws("?channels=a")).await;
    let (status, _) = post(
        &format!("http://{}/api/publish", server.addr),
        serde_json::json!({"channel": "a", "data": "ok"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "ok");
}

#[tokio::test]
async fn bad_configuration_exits_64() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wspush"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-message-size",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-message-size"));
}
