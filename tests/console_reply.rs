//! The seed's operator loop (issue #16 item 3): `> text` answers the client whose message
//! the console showed last, `/reply c-N` pins the target, and the first line of a client
//! names its address and user. The real binary, its stdin piped.

mod support;

use futures_util::SinkExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "a-secret-of-at-least-32-bytes-ok!";

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

// issue #16 item 3. Before: `> text` was sent to every client as the text "> text", and
// `/reply` was an unknown command.
#[tokio::test]
async fn greater_than_answers_the_last_client_and_reply_pins_one() {
    let mut server = Binary::serve(&["--jwt-secret", SECRET]).await;
    server.type_line("> anyone there?").await;
    server
        .expect_line(|l| l.starts_with("error: no client has written yet"))
        .await;

    let (mut alice, a) = connect(&server.ws(&format!("?token={}", token("alice")))).await;
    let (mut bob, b) = connect(&server.ws("")).await;

    send_text(&mut alice, "hello from alice").await;
    let intro = server
        .expect_line(|l| l.starts_with(&format!("({a} ")))
        .await;
    assert!(
        intro.starts_with(&format!("({a} from 127.0.0.1:")) && intro.contains(", user alice;"),
        "{intro}"
    );
    server
        .expect_line(|l| l == format!("[{a}] hello from alice"))
        .await;
    server.type_line("> hi alice").await;
    server.expect_line(|l| l == format!("sent to {a}")).await;
    assert_eq!(next_text(&mut alice).await, "hi alice");

    send_text(&mut bob, "bob here\nsecond line").await;
    let intro = server
        .expect_line(|l| l.starts_with(&format!("({b} ")))
        .await;
    assert!(
        intro.starts_with(&format!("({b} from 127.0.0.1:")),
        "{intro}"
    );
    assert!(!intro.contains("user"), "no token, no user: {intro}");
    server
        .expect_line(|l| l == format!("[{b}] bob here\\nsecond line"))
        .await;
    server.type_line(">hi bob").await;
    server.expect_line(|l| l == format!("sent to {b}")).await;
    assert_eq!(next_text(&mut bob).await, "hi bob");

    // Pinned: `>` keeps answering alice whoever writes; the address is shown only once.
    server.type_line(&format!("/reply {a}")).await;
    server
        .expect_line(|l| l == format!("replies (> text) go to {a}"))
        .await;
    send_text(&mut bob, "me again").await;
    let next = server
        .expect_line(|l| l.starts_with(&format!("[{b}] ")) || l.starts_with(&format!("({b} ")))
        .await;
    assert_eq!(next, format!("[{b}] me again"), "introduced once");
    server.type_line("> pinned to alice").await;
    server.expect_line(|l| l == format!("sent to {a}")).await;
    assert_eq!(next_text(&mut alice).await, "pinned to alice");

    // Unpinned: back to the client shown last (bob).
    server.type_line("/reply").await;
    server
        .expect_line(|l| l == "replies go to the client shown last")
        .await;
    server.type_line("> back to bob").await;
    server.expect_line(|l| l == format!("sent to {b}")).await;
    assert_eq!(next_text(&mut bob).await, "back to bob");

    // Nobody got what was meant for the other: their next frames are the broadcast.
    server.type_line("to everyone").await;
    assert_eq!(next_text(&mut alice).await, "to everyone");
    assert_eq!(next_text(&mut bob).await, "to everyone");

    // The client shown last has left: said so, nothing sent.
    bob.send(Message::Close(None)).await.unwrap();
    assert_eq!(close_code(&mut bob).await, 1005, "the close echoed");
    // The hub forgets it right after the close handshake: wait for that (bounded).
    for attempt in 0.. {
        assert!(attempt < 50, "bob is still listed");
        server.type_line("/clients").await;
        let n = server.expect_line(|l| l.ends_with(" clients")).await;
        if n == "1 clients" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.type_line("> still there?").await;
    server
        .expect_line(|l| l == format!("error: no client {b} (it left)"))
        .await;
    server.type_line("/reply c-x").await;
    server
        .expect_line(|l| l == "error: 'c-x' is not a client id (c-N)")
        .await;
    server.type_line("/help").await;
    server.expect_line(|l| l.contains("/reply c-N")).await;
}
