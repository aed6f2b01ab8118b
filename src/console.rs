//! The operator console: commands from stdin (on a thread of its own, so it never
//! blocks the server) and lines to stdout (through a queue bounded in bytes and one
//! writer task). Every line is escaped and cut (`escape`): what a client sends is
//! always exactly one console line, with no control characters.

use std::collections::{HashSet, VecDeque};
use std::fmt::{self, Write as _};
use std::io::BufRead;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::{Client, ClientId, Hub, Kind, Payload, ALL};

/// Lines the writer may lag behind before new ones are skipped (and counted).
const OUTPUT_QUEUE: usize = 8192;
/// Bytes of lines the writer may lag behind before new ones are skipped (and counted):
/// a stdout nobody reads holds at most this much.
pub const OUTPUT_BYTES: usize = 1 << 20;
/// Most bytes of a line shown (escapes included); the rest is cut, with a marker
/// `… [+N bytes]` giving how many bytes of the original were not shown.
pub const LINE_MAX: usize = 1024;
/// Clients whose address and user the console remembers having shown; past it the
/// oldest are forgotten (and shown again if they write again).
pub const INTRODUCED_MAX: usize = 4096;

/// Handle for printing lines on the console without ever blocking.
#[derive(Clone)]
pub struct Console {
    tx: Option<mpsc::Sender<String>>,
    backlog: Arc<Backlog>,
    talk: Arc<Mutex<Talk>>,
}

/// Who the operator is talking to: the client shown last, the pinned reply target, and
/// the clients already introduced (address and user shown once).
#[derive(Default)]
struct Talk {
    last: Option<ClientId>,
    pinned: Option<ClientId>,
    introduced: HashSet<ClientId>,
    order: VecDeque<ClientId>,
}

impl Talk {
    /// True the first time `id` is seen (among the last [`INTRODUCED_MAX`]).
    fn introduce(&mut self, id: ClientId) -> bool {
        if !self.introduced.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > INTRODUCED_MAX {
            if let Some(old) = self.order.pop_front() {
                self.introduced.remove(&old);
            }
        }
        true
    }
}

/// What waits for stdout, and what was skipped.
#[derive(Default)]
struct Backlog {
    /// Bytes of the lines queued (each counts its newline).
    bytes: AtomicUsize,
    /// Lines skipped since the writer last said so.
    skipped: AtomicU64,
}

impl Console {
    /// A console that prints nothing.
    pub fn silent() -> Self {
        Console {
            tx: None,
            backlog: Arc::default(),
            talk: Arc::default(),
        }
    }

    /// A console writing to stdout from a task of its own.
    pub fn stdout() -> Self {
        let (tx, mut rx) = mpsc::channel::<String>(OUTPUT_QUEUE);
        let backlog = Arc::new(Backlog::default());
        let shared = backlog.clone();
        tokio::spawn(async move {
            let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
            while let Some(line) = rx.recv().await {
                let mut next = Some(line);
                while let Some(line) = next {
                    let written = out.write_all(line.as_bytes()).await.is_ok()
                        && out.write_all(b"\n").await.is_ok();
                    shared.bytes.fetch_sub(line.len() + 1, Relaxed);
                    if !written {
                        return;
                    }
                    next = rx.try_recv().ok();
                }
                let n = shared.skipped.swap(0, Relaxed);
                if n > 0 {
                    let note = format!("(console: {n} lines skipped, output too slow)\n");
                    if out.write_all(note.as_bytes()).await.is_err() {
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
            backlog,
            talk: Arc::default(),
        }
    }

    /// Prints `text` as one line, escaped and cut at `LINE_MAX` (skipped and counted if
    /// stdout is not keeping up).
    pub fn line(&self, text: &str) {
        if self.tx.is_some() {
            let mut line = String::with_capacity(text.len().min(LINE_MAX) + 16);
            escape(&mut line, text, LINE_MAX);
            self.enqueue(line);
        }
    }

    /// Prints a message a client sent: `[c-N] text` (escaped and cut) or
    /// `[c-N] <binary N bytes>`, after `(c-N from ADDR, user U; ...)` the first time that
    /// client writes. It becomes the client `> text` answers.
    pub fn upstream(&self, client: &Client, payload: &Payload) {
        if self.tx.is_none() {
            return;
        }
        let id = client.id;
        let first = {
            let mut talk = self.talk.lock();
            talk.last = Some(id);
            talk.introduce(id)
        };
        if first {
            // Not a `[c-N]` line: those are what clients said.
            let mut line = format!("({id} from {}", client.remote);
            if let Some(user) = client.user() {
                line.push_str(", user ");
                escape(&mut line, &user, 128);
            }
            line.push_str("; > text answers the client shown last)");
            self.enqueue(line);
        }
        let mut line = String::with_capacity(payload.data.len().min(LINE_MAX) + 32);
        let _ = write!(line, "[{id}] ");
        match payload.kind {
            Kind::Binary => {
                let _ = write!(line, "<binary {} bytes>", payload.data.len());
            }
            _ => escape(&mut line, &String::from_utf8_lossy(&payload.data), LINE_MAX),
        }
        self.enqueue(line);
    }

    /// Who `> text` answers: the pinned client, or else the client shown last.
    pub fn reply_target(&self) -> Option<ClientId> {
        let talk = self.talk.lock();
        talk.pinned.or(talk.last)
    }

    /// Pins the reply target (`None`: back to the client shown last).
    pub fn pin(&self, id: Option<ClientId>) {
        self.talk.lock().pinned = id;
    }

    /// Queues a line unless that would pass `OUTPUT_BYTES` or `OUTPUT_QUEUE`; a line
    /// not queued is counted, and the writer says how many were skipped.
    fn enqueue(&self, line: String) {
        let Some(tx) = &self.tx else { return };
        let cost = line.len() + 1;
        let backlog = &self.backlog;
        let room = backlog
            .bytes
            .fetch_update(Relaxed, Relaxed, |b| {
                (b + cost <= OUTPUT_BYTES).then_some(b + cost)
            })
            .is_ok();
        if !room {
            backlog.skipped.fetch_add(1, Relaxed);
        } else if tx.try_send(line).is_err() {
            backlog.bytes.fetch_sub(cost, Relaxed);
            backlog.skipped.fetch_add(1, Relaxed);
        }
    }
}

/// Appends `text` to `out` with every control character escaped (`\n`, `\r`, `\t`,
/// `\x1b` for the other C0 codes and DEL, `\u{9b}` for C1 codes, line separators and
/// bidi overrides), at most `max` bytes of it; the rest is cut at a character boundary
/// and replaced by `… [+N bytes]`, N the bytes of `text` not shown.
pub fn escape(out: &mut String, text: &str, max: usize) {
    let _ = write_escaped(out, text, max);
}

/// `Display` of client-provided text for logs: escaped and cut like console lines.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0, LINE_MAX)
    }
}

fn write_escaped(out: &mut impl fmt::Write, text: &str, max: usize) -> fmt::Result {
    let mut shown = 0;
    for (at, ch) in text.char_indices() {
        let mut one = Small::default();
        match ch {
            '\n' => one.push("\\n"),
            '\r' => one.push("\\r"),
            '\t' => one.push("\\t"),
            '\0'..='\x1f' | '\x7f' => write!(one, "\\x{:02x}", ch as u32)?,
            '\u{80}'..='\u{9f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}' => write!(one, "\\u{{{:x}}}", ch as u32)?,
            _ => one.push(ch.encode_utf8(&mut [0; 4])),
        }
        let shown_ch = one.as_str();
        if shown + shown_ch.len() > max {
            return write!(out, "… [+{} bytes]", text.len() - at);
        }
        shown += shown_ch.len();
        out.write_str(shown_ch)?;
    }
    Ok(())
}

/// One character as shown (at most `\u{10ffff}`, 10 bytes).
#[derive(Default)]
struct Small {
    buf: [u8; 12],
    len: usize,
}

impl Small {
    fn push(&mut self, s: &str) {
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("whole characters were pushed")
    }
}

impl fmt::Write for Small {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > self.buf.len() {
            return Err(fmt::Error);
        }
        self.push(s);
        Ok(())
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
    /// `> text`: to the pinned client, or else the one whose message was shown last.
    Reply(String),
    /// `/reply c-N` pins the reply target; `/reply` alone unpins it.
    Pin(Option<String>),
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
    if let Some(rest) = line.strip_prefix('>') {
        let text = rest.strip_prefix(' ').unwrap_or(rest);
        if text.is_empty() {
            return Command::Invalid("usage: > text (answers the client shown last)".into());
        }
        return Command::Reply(text.to_string());
    }
    if let Some(rest) = line.trim().strip_prefix("/reply") {
        if rest.is_empty() || rest.starts_with(' ') {
            let id = rest.trim();
            return Command::Pin((!id.is_empty()).then(|| id.to_string()));
        }
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

const HELP: &str = "commands:\n  text            send to every client\n  #channel text   publish to a channel\n  @c-N text       send to one client\n  > text          answer the client whose message was shown last (or the pinned one)\n  /reply c-N      pin the client > answers (/reply alone: back to the last one shown)\n  /clients        list connected clients\n  /channels       list channels\n  /help           this help\n  /quit           shut the server down";

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
    let say = |s: String| console.line(&s);
    match cmd {
        Command::Nothing => {}
        Command::All(text) => match hub.publish(ALL, Payload::text(text)).await {
            Ok(_) => say(format!("sent to {} clients", hub.stats().connections())),
            Err(e) => say(format!("error: {e}")),
        },
        Command::Channel(channel, text) => match hub.publish(&channel, Payload::text(text)).await {
            Ok(offset) => say(format!(
                "published to #{channel} (offset {offset}, {} local subscribers)",
                hub.subscriber_count(&channel)
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
        Command::Reply(text) => match console.reply_target() {
            None => say(
                "error: no client has written yet; > text answers the client shown last, \
                 /reply c-N pins one"
                    .into(),
            ),
            Some(cid) => match hub.send(cid, Payload::text(text)).await {
                Ok(0) => say(format!("error: no client {cid} (it left)")),
                Ok(_) => say(format!("sent to {cid}")),
                Err(e) => say(format!("error: {e}")),
            },
        },
        Command::Pin(None) => {
            console.pin(None);
            say("replies go to the client shown last".into());
        }
        Command::Pin(Some(id)) => match id.parse::<ClientId>() {
            Err(()) => say(format!("error: '{id}' is not a client id (c-N)")),
            Ok(cid) => {
                console.pin(Some(cid));
                say(format!("replies (> text) go to {cid}"));
            }
        },
        Command::Clients => {
            let clients = hub.client_list();
            say(format!("{} clients", clients.len()));
            for c in clients {
                let (id, format, remote) = (c.id, c.format, c.remote);
                say(format!(
                    "  {id} {format} {remote} [{}]",
                    c.channels.join(",")
                ));
            }
        }
        Command::Channels => {
            let channels = hub.channel_list();
            say(format!("{} channels", channels.len()));
            for (name, n) in channels {
                say(format!("  #{name} {n} subscribers"));
            }
        }
        Command::Help => HELP.lines().for_each(|l| console.line(l)),
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
        // issue #16 item 3
        assert_eq!(parse("> hi there"), Command::Reply("hi there".into()));
        assert_eq!(parse(">hi"), Command::Reply("hi".into()));
        assert!(matches!(parse(">"), Command::Invalid(_)));
        assert_eq!(parse("/reply c-7"), Command::Pin(Some("c-7".into())));
        assert_eq!(parse("/reply"), Command::Pin(None));
        assert!(matches!(parse("/replyx"), Command::Invalid(_)));
    }

    fn escaped(text: &str, max: usize) -> String {
        let mut out = String::new();
        escape(&mut out, text, max);
        out
    }

    // issue #12 item 2
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escaped(
                "a\x1b]0;t\x07\n[c-9] b\r\t\0\x7f\u{85}\u{9b}\u{2028}\u{202e}é",
                100
            ),
            r"a\x1b]0;t\x07\n[c-9] b\r\t\x00\x7f\u{85}\u{9b}\u{2028}\u{202e}é"
        );
        assert_eq!(escaped(r"back\slash", 100), r"back\slash");
        assert_eq!(Escaped("x\ny").to_string(), r"x\ny");
    }

    // issue #12 item 2
    #[test]
    fn long_text_is_cut_at_a_char_boundary_with_a_marker() {
        assert_eq!(escaped("abcd", 4), "abcd");
        assert_eq!(escaped("abcde", 4), "abcd… [+1 bytes]");
        // 'é' is 2 bytes: a third would pass 5.
        assert_eq!(escaped("éééé", 5), "éé… [+4 bytes]");
        // An escape is never split, and counts as what is shown.
        assert_eq!(escaped("ab\x1b", 5), "ab… [+1 bytes]");
        let long = "x".repeat(1 << 20);
        let line = escaped(&long, LINE_MAX);
        assert_eq!(line, format!("{}… [+1047552 bytes]", "x".repeat(1024)));
        assert_eq!(Escaped(&long).to_string(), line);
    }
}
