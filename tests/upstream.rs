//! Messages raw clients send: echo, publish:CHANNEL and webhook:URL (issue #2).

mod support;

use std::sync::{Arc, Mutex};

use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echo_returns_text_as_text_and_binary_as_binary() {
    let server = TestServer::with(|c| c.upstream = "echo".parse().unwrap()).await;
    let (mut ws, _) = connect(&server.ws("")).await;
    send_text(&mut ws, "héllo").await;
    assert_eq!(next_text(&mut ws).await, "héllo");
    futures_util::SinkExt::send(&mut ws, Message::Binary(vec![0, 1, 2].into()))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut ws).await,
        Message::Binary(vec![0, 1, 2].into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn publish_upstream_makes_a_chat_room() {
    let server = TestServer::with(|c| c.upstream = "publish:room".parse().unwrap()).await;
    let (mut alice, _) = connect(&server.ws("?channels=room")).await;
    let (mut bob, _) = connect(&server.ws("?channels=room")).await;
    send_text(&mut alice, "hi bob").await;
    assert_eq!(next_text(&mut bob).await, "hi bob");
    assert_eq!(next_text(&mut alice).await, "hi bob");
    server.shutdown().await;
}

/// A backend on 127.0.0.1:0 that records what it gets and answers with `answer`.
async fn backend(status: u16, answer: Value) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = Router::new().route(
        "/hook",
        post(move |axum::Json(body): axum::Json<Value>| {
            let log = log.clone();
            let answer = answer.clone();
            async move {
                let reply = json!({ "reply": format!("{}: {}", answer, body["data"].as_str().unwrap_or("")) });
                log.lock().unwrap().push(body);
                (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(reply))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn webhook_gets_client_and_data_and_its_reply_reaches_the_client() {
    let (url, seen) = backend(200, json!("ack")).await;
    let server = TestServer::with(|c| c.upstream = format!("webhook:{url}").parse().unwrap()).await;
    let (mut ws, id) = connect(&server.ws("")).await;
    send_text(&mut ws, "order pizza").await;
    assert_eq!(next_text(&mut ws).await, "\"ack\": order pizza");
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![json!({"client": id, "data": "order pizza"})]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_failing_webhook_is_survived_and_later_messages_still_go_through() {
    let (url, seen) = backend(500, json!("nope")).await;
    let server = TestServer::with(|c| c.upstream = format!("webhook:{url}").parse().unwrap()).await;
    let (mut ws, _) = connect(&server.ws("?channels=t")).await;
    send_text(&mut ws, "one").await;
    send_text(&mut ws, "two").await;
    within("both webhook calls", async {
        while seen.lock().unwrap().len() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    // No reply was delivered for the failed calls, and the connection is still served.
    publish(&server, "t", "still connected").await;
    assert_eq!(next_text(&mut ws).await, "still connected");
    server.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_webhook_does_not_break_the_session() {
    let server =
        TestServer::with(|c| c.upstream = "webhook:http://127.0.0.1:9/none".parse().unwrap()).await;
    let (mut ws, _) = connect(&server.ws("?channels=t")).await;
    send_text(&mut ws, "into the void").await;
    publish(&server, "t", "alive").await;
    assert_eq!(next_text(&mut ws).await, "alive");
    server.shutdown().await;
}
