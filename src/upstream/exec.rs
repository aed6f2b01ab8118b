//! `--upstream exec:COMMAND`: one process per raw client (websocketd's model). Its stdin
//! gets the client's text messages, one per line; each line it prints on stdout goes
//! back to that client; its environment names the client (`WSPUSH_CLIENT`,
//! `REMOTE_ADDR`, `REMOTE_PORT`, `QUERY_STRING`, `WSPUSH_USER`). It ends when the client
//! leaves (stdin closed, killed after [`EXIT_GRACE`]) and the client is closed (1000)
//! when it exits. Everything is bounded: the processes (`max_exec_processes`), what waits
//! for its stdin (bytes), the length of its lines (`max_message_size`) and their rate
//! (the command budget: a faster process waits, its output is not dropped), and the
//! lines of its stderr shown in the log.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::console::Escaped;
use crate::hub::{Client, Pushed};
use crate::limits::Bucket;
use crate::model::Disconnect;

/// How long a process whose client left has to exit after its stdin closed, before it
/// is killed.
pub const EXIT_GRACE: Duration = Duration::from_secs(1);
/// Bytes of client messages that may wait for a process's stdin (one message of any
/// allowed size always fits in an empty queue); past it the client is closed (1008).
pub const STDIN_BYTES: usize = 1 << 20;
/// Lines of a process's stderr shown in the log (escaped and cut); the rest are counted.
pub const STDERR_LINES: u32 = 20;

/// The `exec:` handler: the command and the process slots.
pub struct Exec {
    words: Vec<String>,
    slots: Arc<Semaphore>,
    max: usize,
}

/// Why a process was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Every slot is taken.
    #[error(
        "refused WebSocket: all {0} upstream processes are running (max_exec_processes); \
         raise --max-exec-processes"
    )]
    Full(usize),
    /// The program could not be started.
    #[error("cannot start the upstream process {program:?}: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        error: std::io::Error,
    },
}

/// What a process needs to know of its client and how it is bounded.
pub struct Start<'a> {
    /// The client.
    pub client: &'a Arc<Client>,
    /// Its address.
    pub remote: SocketAddr,
    /// Its handshake's query string (without `?`).
    pub query: &'a str,
    /// Longest line sent to the client (`max_message_size`).
    pub max_line: usize,
    /// Lines per second and burst (the command budget).
    pub rate: (f64, f64),
    /// Where the process's tasks are tracked (waited for at shutdown).
    pub tracker: &'a TaskTracker,
    /// Cancelled at shutdown: the process is stopped.
    pub shutdown: CancellationToken,
}

/// A client's process, seen from its session. Dropping it closes the process's stdin
/// and stops it (killed after [`EXIT_GRACE`]).
pub struct Proc {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
    _left: DropGuard,
}

/// A client message was not taken: too much already waits for the process.
#[derive(Debug)]
pub struct Backlogged;

impl Exec {
    /// The handler for `words` (program and arguments), with `max` process slots.
    pub fn new(words: Vec<String>, max: usize) -> Self {
        Exec {
            words,
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Processes running now.
    pub fn running(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// A process slot, if one is free.
    pub fn slot(&self) -> Result<OwnedSemaphorePermit, StartError> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| StartError::Full(self.max))
    }

    /// Starts the process of `start.client` in `slot`.
    pub fn start(&self, slot: OwnedSemaphorePermit, start: Start<'_>) -> Result<Proc, StartError> {
        let client = start.client.clone();
        let mut cmd = Command::new(&self.words[0]);
        cmd.args(&self.words[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // The server's own settings (secrets among them) are not the program's business.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("WSPUSH_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("WSPUSH_CLIENT", client.id.to_string())
            .env("REMOTE_ADDR", start.remote.ip().to_string())
            .env("REMOTE_PORT", start.remote.port().to_string())
            .env("QUERY_STRING", start.query);
        if let Some(user) = client.user() {
            cmd.env("WSPUSH_USER", &*user);
        }
        let mut child = cmd.spawn().map_err(|error| StartError::Spawn {
            program: self.words[0].clone(),
            error,
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let left = CancellationToken::new();
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        start.tracker.spawn(feed(stdin, rx, queued.clone()));
        start.tracker.spawn(show_stderr(
            BufReader::new(stderr),
            client.id.to_string(),
            start.shutdown.clone(),
        ));
        let relay = Relay {
            client,
            max_line: start.max_line,
            rate: start.rate,
        };
        start.tracker.spawn(supervise(
            child,
            relay,
            BufReader::new(stdout),
            left.clone(),
            start.shutdown,
            slot,
        ));
        Ok(Proc {
            tx,
            queued,
            _left: left.drop_guard(),
        })
    }
}

impl Proc {
    /// Queues a client message for the process's stdin, as one line: its own line
    /// breaks become spaces (one message, one line).
    pub fn send(&self, data: &[u8]) -> Result<(), Backlogged> {
        let len = data.len() + 1;
        let fits = self
            .queued
            .fetch_update(Relaxed, Relaxed, |q| {
                (q == 0 || q + len <= STDIN_BYTES).then_some(q + len)
            })
            .is_ok();
        if !fits {
            return Err(Backlogged);
        }
        let mut line = BytesMut::with_capacity(len);
        line.extend(
            data.iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        line.extend_from_slice(b"\n");
        // The feeder is gone only once the process is: the client is being closed.
        let _ = self.tx.send(line.freeze());
        Ok(())
    }
}

/// Writes queued lines to the process's stdin; closes it when the session drops its
/// `Proc` (or the process stops reading for good).
async fn feed(
    mut stdin: tokio::process::ChildStdin,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
) {
    while let Some(line) = rx.recv().await {
        let ok = stdin.write_all(&line).await.is_ok() && stdin.flush().await.is_ok();
        queued.fetch_sub(line.len(), Relaxed);
        if !ok {
            return;
        }
    }
}

/// Shows the first [`STDERR_LINES`] lines of a process's stderr in the log (escaped,
/// cut), counts the rest.
async fn show_stderr(
    mut err: BufReader<tokio::process::ChildStderr>,
    client: String,
    shutdown: CancellationToken,
) {
    let (mut shown, mut hidden) = (0u32, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::select! {
            r = read_line(&mut err, &mut line, 1024) => r,
            _ = shutdown.cancelled() => break,
        };
        match read {
            Ok(Some(_)) if shown < STDERR_LINES => {
                shown += 1;
                let text = String::from_utf8_lossy(&line);
                let stderr = Escaped(&text);
                tracing::info!(%client, %stderr, "upstream process stderr");
            }
            Ok(Some(_)) => hidden += 1,
            Ok(None) | Err(_) => break,
        }
    }
    if hidden > 0 {
        tracing::info!(%client, hidden, "upstream process stderr lines not shown");
    }
}

/// Sends a process's stdout lines to its client, paced and bounded.
struct Relay {
    client: Arc<Client>,
    max_line: usize,
    rate: (f64, f64),
}

impl Relay {
    /// Until the process closes its stdout (or the client can take no more).
    async fn run(&self, mut out: impl AsyncBufRead + Unpin) {
        let (rate, burst) = self.rate;
        let mut bucket = Bucket::full(burst);
        let mut line = Vec::new();
        let mut cut_warned = false;
        loop {
            line.clear();
            match read_line(&mut out, &mut line, self.max_line).await {
                Ok(None) | Err(_) => return,
                Ok(Some(true)) => {}
                Ok(Some(false)) => {
                    if !cut_warned {
                        cut_warned = true;
                        let client = self.client.id;
                        tracing::warn!(
                            %client,
                            max = self.max_line,
                            "upstream process line longer than max_message_size skipped"
                        );
                    }
                    continue;
                }
            }
            // Over the budget, wait: the process blocks on its pipe, nothing is lost.
            while !bucket.take(1.0, rate, burst) {
                tokio::time::sleep(Duration::from_secs_f64((1.0 / rate).min(1.0))).await;
            }
            let frame = match std::str::from_utf8(&line) {
                Ok(_) => crate::frame::encode(crate::frame::OP_TEXT, &line),
                Err(_) => crate::frame::encode(crate::frame::OP_BINARY, &line),
            };
            match self.client.push(frame) {
                Pushed::Queued => {}
                // Overflow closes it as too slow; closed: it is leaving.
                _ => return,
            }
        }
    }
}

/// Reads one line (without its `\n`, and a `\r` before it) into `line`, keeping at most
/// `max` bytes: `Some(true)` a whole line, `Some(false)` a line longer than `max`
/// (read to its end and dropped), `None` at EOF with nothing read.
async fn read_line(
    r: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    let mut too_long = false;
    let mut any = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(any.then_some(!too_long));
        }
        any = true;
        let (chunk, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(buf.len());
        r.consume(used);
        if done.is_some() {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(!too_long));
        }
    }
}

/// Runs a process's life: relays its output until it closes stdout (then its client is
/// closed, 1000), its client leaves or the server shuts down; then gives it
/// [`EXIT_GRACE`] to exit (its stdin is closed once the session is gone), kills it if it
/// has not, reaps it and frees its slot.
async fn supervise(
    mut child: Child,
    relay: Relay,
    stdout: impl AsyncBufRead + Unpin,
    left: CancellationToken,
    shutdown: CancellationToken,
    slot: OwnedSemaphorePermit,
) {
    let client = relay.client.clone();
    let exited = tokio::select! {
        _ = relay.run(stdout) => true,
        _ = left.cancelled() => false,
        _ = shutdown.cancelled() => false,
    };
    if exited {
        client.close(Disconnect::Ended);
    }
    let status = match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let id = client.id;
    match status {
        Ok(status) => tracing::debug!(client = %id, %status, "upstream process ended"),
        Err(e) => tracing::warn!(client = %id, error = %e, "upstream process lost"),
    }
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    // issue #16 item 5: a line is bounded whatever the process prints
    #[tokio::test]
    async fn lines_are_bounded_and_split() {
        let input: &[u8] = b"one\r\ntwo\nthis one is far too long\nlast";
        let mut r = BufReader::with_capacity(4, input);
        let mut line = Vec::new();
        let mut got = Vec::new();
        while let Some(whole) = read_line(&mut r, &mut line, 8).await.unwrap() {
            got.push((whole, String::from_utf8(line.clone()).unwrap()));
            line.clear();
        }
        assert_eq!(
            got,
            [
                (true, "one".to_string()),
                (true, "two".to_string()),
                (false, String::new()),
                (true, "last".to_string())
            ]
        );
    }
}
