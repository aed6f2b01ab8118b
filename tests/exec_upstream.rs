//! `--upstream exec:COMMAND` (issue #16 item 5): one process per raw client, websocketd's
//! model, bounded like any other input.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use wspush::config::Spec;

/// Writes `body` to a fresh shell script; returns its path.
fn script(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wspush-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    path
}

fn exec(path: &std::path::Path) -> Spec {
    Spec::Exec(vec!["sh".into(), path.to_string_lossy().into_owned()])
}

/// True while process `pid` exists (a zombie counts: it has not been reaped).
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits (bounded) until process `pid` is gone.
async fn gone(pid: u32) {
    within("the process to end", async {
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

const ECHO: &str = r#"echo "hello $WSPUSH_CLIENT from $REMOTE_ADDR query=$QUERY_STRING secret=${WSPUSH_JWT_SECRET:-none}"
while IFS= read -r line; do
  if [ "$line" = quit ]; then echo "bye"; exit 0; fi
  echo "echo: $line"
done"#;

// issue #16 item 5: stdin gets the messages one per line, stdout lines come back, the
// environment names the client, and the process exiting closes the client (1000).
// Before: `exec:` was an unknown upstream (exit 64).
#[tokio::test]
async fn a_process_per_client_echoes_with_a_prefix_and_its_exit_closes_the_client() {
    let path = script("echo.sh", ECHO);
    let server = TestServer::with(|c| c.upstream = exec(&path)).await;
    let (mut ws, id) = connect(&server.ws("?channels=news&x=1")).await;
    assert_eq!(
        next_text(&mut ws).await,
        format!("hello {id} from 127.0.0.1 query=channels=news&x=1 secret=none")
    );
    send_text(&mut ws, "abc").await;
    assert_eq!(next_text(&mut ws).await, "echo: abc");
    // One message, one line: its own line breaks become spaces.
    send_text(&mut ws, "two\nlines").await;
    assert_eq!(next_text(&mut ws).await, "echo: two lines");
    // Still a raw client: published messages arrive too.
    publish(&server, "news", "published").await;
    assert_eq!(next_text(&mut ws).await, "published");
    send_text(&mut ws, "quit").await;
    assert_eq!(next_text(&mut ws).await, "bye");
    assert_eq!(close_code(&mut ws).await, 1000);
    server.shutdown().await;

    // A process that prints and exits at once, before the session even started: its
    // line still arrives, then the close.
    let quick = script("quick.sh", "echo once");
    let server = TestServer::with(|c| c.upstream = exec(&quick)).await;
    for _ in 0..5 {
        let (mut ws, _) = connect(&server.ws("")).await;
        assert_eq!(next_text(&mut ws).await, "once");
        assert_eq!(close_code(&mut ws).await, 1000);
    }
    server.shutdown().await;

    // A program that cannot start: 503 naming it, logged.
    let server = TestServer::with(|c| {
        c.upstream = Spec::Exec(vec!["/nonexistent/wspush-test-program".into()])
    })
    .await;
    match tokio_tungstenite::connect_async(server.ws("")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap()).into_owned();
            assert!(body.contains("cannot start the upstream process"), "{body}");
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    server.shutdown().await;
}

// issue #16 item 5: a client that leaves ends its process: stdin closes, and one that
// does not read it is killed after the grace.
#[tokio::test]
async fn a_client_that_leaves_ends_its_process() {
    let reader = script("reader.sh", "echo $$\nwhile read -r line; do :; done");
    let deaf = script(
        "deaf.sh",
        "echo $$\ntrap '' TERM INT HUP\nwhile :; do sleep 1; done",
    );
    for (path, what) in [(reader, "reads stdin"), (deaf, "ignores stdin and signals")] {
        let server = TestServer::with(|c| c.upstream = exec(&path)).await;
        let (mut ws, _) = connect(&server.ws("")).await;
        let pid: u32 = next_text(&mut ws).await.parse().unwrap();
        assert!(alive(pid), "{what}");
        ws.send(Message::Close(None)).await.unwrap();
        let started = Instant::now();
        gone(pid).await;
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
        server.shutdown().await;
    }
}

// issue #16 item 5: at most max_exec_processes; the next raw client gets 503 with the fix,
// and a slot frees when a client leaves.
#[tokio::test]
async fn processes_are_bounded() {
    let path = script("pid.sh", "echo $$\nwhile read -r line; do :; done");
    let server = TestServer::with(|c| {
        c.upstream = exec(&path);
        c.max_exec_processes = 2;
    })
    .await;
    let (mut one, _) = connect(&server.ws("")).await;
    let (mut two, _) = connect(&server.ws("")).await;
    let pid: u32 = next_text(&mut one).await.parse().unwrap();
    next_text(&mut two).await;
    let refused = tokio_tungstenite::connect_async(server.ws("")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            let text = body["error"]["message"].as_str().unwrap();
            assert!(
                text.contains("all 2 upstream processes are running")
                    && text.contains("--max-exec-processes"),
                "{text}"
            );
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    // JSON-mode clients have no process: not counted.
    let _json = JsonClient::connect(&server.ws("")).await;
    one.send(Message::Close(None)).await.unwrap();
    gone(pid).await;
    let mut three = None;
    for attempt in 0.. {
        assert!(attempt < 100, "the slot was not freed");
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(server.ws("")).await {
            three = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    next_text(three.as_mut().unwrap()).await;
    server.shutdown().await;
}

// issue #16 item 5 (as an attacker): a client flooding a process that does not read is
// closed (1008) instead of queueing without limit; an endless line from the process is
// skipped, not buffered; a chatty process is paced by the command budget.
#[tokio::test]
async fn input_and_output_are_bounded() {
    let deaf = script("deaf2.sh", "echo ready\nexec sleep 1000");
    let server = TestServer::with(|c| c.upstream = exec(&deaf)).await;
    let (mut ws, _) = connect(&server.ws("")).await;
    assert_eq!(next_text(&mut ws).await, "ready");
    let chunk = "x".repeat(400 * 1024);
    for _ in 0..4 {
        if ws.send(Message::text(chunk.clone())).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, 1008);
    server.shutdown().await;

    let long = script(
        "long.sh",
        "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo after; read -r line",
    );
    let server = TestServer::with(|c| c.upstream = exec(&long)).await;
    let (mut ws, _) = connect(&server.ws("")).await;
    assert_eq!(
        next_text(&mut ws).await,
        "after",
        "the 3 MB line was skipped"
    );
    server.shutdown().await;

    let chatty = script(
        "chatty.sh",
        "i=0; while [ $i -lt 30 ]; do echo $i; i=$((i+1)); done; read -r line",
    );
    let server = TestServer::with(|c| {
        c.upstream = exec(&chatty);
        c.command_rate = 20.0;
        c.command_burst = 10;
    })
    .await;
    let (mut ws, _) = connect(&server.ws("")).await;
    let started = Instant::now();
    for i in 0..30 {
        assert_eq!(
            next_text(&mut ws).await,
            i.to_string(),
            "in order, none lost"
        );
    }
    // 10 at once, then 20 at 20 per second: at least ~1 s.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await;
}

// issue #16 item 5: shutdown ends every process (the binary, SIGTERM).
#[tokio::test]
async fn shutdown_kills_the_processes() {
    let deaf = script(
        "stubborn.sh",
        "echo $$\ntrap '' TERM INT HUP\nwhile :; do sleep 1; done",
    );
    let spec = format!("exec:sh {}", deaf.display());
    let mut server = Binary::serve(&["--upstream", &spec]).await;
    let mut pids = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (mut ws, _) = connect(&server.ws("")).await;
        pids.push(next_text(&mut ws).await.parse::<u32>().unwrap());
        clients.push(ws);
    }
    assert!(pids.iter().all(|&p| alive(p)));
    let pid = server.child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    for ws in &mut clients {
        assert_eq!(close_code(ws).await, 1001);
    }
    let status = within("wspush exits", server.child.wait()).await.unwrap();
    assert!(status.success(), "{status}");
    for pid in pids {
        gone(pid).await;
    }
}

// issue #16 item 5 (as an attacker): the server's own settings, secrets among them, are
// not in the program's environment; its client's are.
#[tokio::test]
async fn the_process_does_not_see_the_servers_secrets() {
    use tokio::io::AsyncBufReadExt;
    let env = script(
        "env.sh",
        "echo \"key=${WSPUSH_API_KEY:-none} client=$WSPUSH_CLIENT port=$REMOTE_PORT\"\nread -r line",
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wspush"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-console"])
        .env("WSPUSH_UPSTREAM", format!("exec:sh {}", env.display()))
        .env("WSPUSH_API_KEY", "top-secret")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = within("the listening line", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    let addr = first
        .strip_prefix("listening on http://")
        .unwrap()
        .to_string();
    let (mut ws, id) = connect(&format!("ws://{addr}/ws")).await;
    let line = next_text(&mut ws).await;
    assert!(
        line.starts_with(&format!("key=none client={id} port=")),
        "{line}"
    );
}
