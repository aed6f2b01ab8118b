//! The operator console: commands from stdin (on a thread of its own, so it never
//! blocks the server) and lines to stdout (through a bounded queue and one writer task).

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::{ClientId, Hub, Payload, ALL};

/// Lines the writer may lag behind before new ones are skipped (and counted).
const OUTPUT_QUEUE: usize = 8192;

/// Handle for printing lines on the console without ever blocking.
#[derive(Clone)]
pub struct Console {
    tx: Option<mpsc::Sender<String>>,
    skipped: Arc<AtomicU64>,
}

impl Console {
    /// A console that prints nothing.
    pub fn silent() -> Self {
        Console {
            tx: None,
            skipped: Arc::default(),
        }
    }

    /// A console writing to stdout from a task of its own.
    pub fn stdout() -> Self {
        let (tx, mut rx) = mpsc::channel::<String>(OUTPUT_QUEUE);
        let skipped = Arc::new(AtomicU64::new(0));
        let lost = skipped.clone();
        tokio::spawn(async move {
            let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
            while let Some(line) = rx.recv().await {
                let mut batch = vec![line];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let n = lost.swap(0, Relaxed);
                if n > 0 {
                    batch.push(format!("(console: {n} lines skipped, output too slow)"));
                }
                for line in batch {
                    if out.write_all(line.as_bytes()).await.is_err()
                        || out.write_all(b"\n").await.is_err()
                    {
                        return;
                    }
                }
                if out.flush().await.is_err() {
                    return;
                }
            }
        });
        Console {
            tx: Some(tx),
            skipped,
        }
    }

    /// Prints a line (skipped and counted if stdout is not keeping up).
    pub fn line(&self, line: String) {
        if let Some(tx) = &self.tx {
            if tx.try_send(line).is_err() {
                self.skipped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// One operator command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Plain text: to every client.
    All(String),
    /// `#channel text`.
    Channel(String, String),
    /// `@client text`.
    Client(String, String),
    /// `/clients`.
    Clients,
    /// `/channels`.
    Channels,
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
    /// Blank line.
    Nothing,
    /// Something that is not a command, with what is wrong.
    Invalid(String),
}

/// Parses one console line.
pub fn parse(line: &str) -> Command {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Command::Nothing;
    }
    let target = |rest: &str| match rest.split_once(' ') {
        Some((name, text)) if !name.is_empty() && !text.is_empty() => {
            Some((name.to_string(), text.to_string()))
        }
        _ => None,
    };
    if let Some(rest) = line.strip_prefix('#') {
        return target(rest)
            .map(|(c, t)| Command::Channel(c, t))
            .unwrap_or_else(|| Command::Invalid("usage: #channel text".into()));
    }
    if let Some(rest) = line.strip_prefix('@') {
        return target(rest)
            .map(|(c, t)| Command::Client(c, t))
            .unwrap_or_else(|| Command::Invalid("usage: @client-id text".into()));
    }
    if line.starts_with('/') {
        return match line.trim() {
            "/clients" => Command::Clients,
            "/channels" => Command::Channels,
            "/help" => Command::Help,
            "/quit" => Command::Quit,
            other => Command::Invalid(format!("unknown command {other}; /help lists them")),
        };
    }
    Command::All(line.to_string())
}

const HELP: &str = "commands:\n  text            send to every client\n  #channel text   publish to a channel\n  @c-N text       send to one client\n  /clients        list connected clients\n  /channels       list channels\n  /help           this help\n  /quit           shut the server down";

/// Reads commands from stdin until it closes (the server keeps running) or `/quit`
/// (which cancels `quit`).
pub fn spawn_input(hub: Hub, console: Console, quit: CancellationToken) {
    let (tx, mut rx) = mpsc::channel::<String>(64);
    std::thread::Builder::new()
        .name("console-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        })
        .expect("console thread starts");
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            if !run(&hub, &console, parse(&line)).await {
                quit.cancel();
                return;
            }
        }
        tracing::info!("console: stdin closed; the server keeps running");
    });
}

/// Executes one command; false for `/quit`.
async fn run(hub: &Hub, console: &Console, cmd: Command) -> bool {
    let say = |s: String| console.line(s);
    match cmd {
        Command::Nothing => {}
        Command::All(text) => match hub.publish(ALL, Payload::text(text)).await {
            Ok(_) => say(format!(
                "sent to {} clients",
                hub.registry().stats.connections()
            )),
            Err(e) => say(format!("error: {e}")),
        },
        Command::Channel(channel, text) => match hub.publish(&channel, Payload::text(text)).await {
            Ok(offset) => say(format!(
                "published to #{channel} (offset {offset}, {} local subscribers)",
                hub.registry().subscriber_count(&channel)
            )),
            Err(e) => say(format!("error: {e}")),
        },
        Command::Client(id, text) => match id.parse::<ClientId>() {
            Err(()) => say(format!("error: '{id}' is not a client id (c-N)")),
            Ok(cid) => match hub.send(cid, Payload::text(text)).await {
                Ok(0) => say(format!("error: no client {cid}")),
                Ok(_) => say(format!("sent to {cid}")),
                Err(e) => say(format!("error: {e}")),
            },
        },
        Command::Clients => {
            let clients = hub.registry().clients();
            say(format!("{} clients", clients.len()));
            for c in clients {
                let chans: Vec<_> = c.channels().iter().map(|s| s.to_string()).collect();
                say(format!(
                    "  {} {} {} [{}]",
                    c.id,
                    c.mode.name(),
                    c.remote,
                    chans.join(",")
                ));
            }
        }
        Command::Channels => {
            let channels = hub.registry().channels();
            say(format!("{} channels", channels.len()));
            for (name, n) in channels {
                say(format!("  #{name} {n} subscribers"));
            }
        }
        Command::Help => say(HELP.to_string()),
        Command::Quit => {
            say("shutting down".into());
            return false;
        }
        Command::Invalid(why) => say(format!("error: {why}")),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse("hello all"), Command::All("hello all".into()));
        assert_eq!(
            parse("#news big one"),
            Command::Channel("news".into(), "big one".into())
        );
        assert_eq!(parse("@c-7 hi"), Command::Client("c-7".into(), "hi".into()));
        assert_eq!(parse("/clients"), Command::Clients);
        assert_eq!(parse("/quit\r"), Command::Quit);
        assert_eq!(parse("   "), Command::Nothing);
        assert!(matches!(parse("#news"), Command::Invalid(_)));
        assert!(matches!(parse("/nope"), Command::Invalid(_)));
    }
}
