//! `wspush client URL`: prints every frame received, sends each stdin line as a text
//! frame, exits cleanly when the connection closes. On a terminal, control characters
//! in what arrives are escaped (one message, one line; no terminal escape sequences).

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::console::{escape, Escaped};

/// Runs the client until the server closes or stdin ends (then closes with 1000).
pub async fn run(url: &str) -> anyhow::Result<()> {
    let (ws, resp) = tokio_tungstenite::connect_async(url).await?;
    if let Some(id) = resp
        .headers()
        .get("x-wspush-client")
        .and_then(|v| v.to_str().ok())
    {
        eprintln!("connected as {id}");
    }
    let (mut tx, mut rx) = ws.split();
    // Whatever publishers sent reaches the terminal escaped; a pipe gets it as it is.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let show = |text: &str| {
        if terminal {
            let mut line = String::with_capacity(text.len());
            escape(&mut line, text, usize::MAX);
            println!("{line}");
        } else {
            println!("{text}");
        }
    };
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => show(t.as_str()),
                Some(Ok(Message::Binary(b))) => println!("<binary {} bytes>", b.len()),
                Some(Ok(Message::Close(frame))) => {
                    match frame {
                        Some(f) => eprintln!("closed: {} {}", u16::from(f.code), Escaped(&f.reason)),
                        None => eprintln!("closed"),
                    }
                    // Let tungstenite answer the close handshake.
                    while let Some(Ok(_)) = rx.next().await {}
                    return Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            line = stdin.next_line(), if stdin_open => match line? {
                Some(line) => tx.send(Message::text(line)).await?,
                None => {
                    stdin_open = false;
                    tx.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await?;
                }
            },
        }
    }
}
