//! Test support: a real server on 127.0.0.1:0 (in-process or the built binary), real
//! WebSocket clients, and bounded waits.
#![allow(dead_code, missing_docs)]

pub mod raw;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wspush::config::Config;
use wspush::server::{self, ConsoleMode};

/// Upper bound of any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Awaits `fut` for at most `WAIT`, failing the test with `what` otherwise.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A running server, in this process or the built binary.
pub trait Server {
    /// Its address.
    fn addr(&self) -> SocketAddr;
    /// An http:// URL on it.
    fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }
    /// A ws:// URL of `/ws` with `query`.
    fn ws(&self, query: &str) -> String {
        format!("ws://{}/ws{}", self.addr(), query)
    }
}

impl Server for TestServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Server for Binary {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        tweak(&mut config);
        let runtime = wspush::setup::build(config).expect("test config is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server::run(listener, runtime, ConsoleMode::Off, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        within("server shutdown", self.task.take().unwrap())
            .await
            .unwrap()
            .unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Connects a WebSocket client; returns it with its client id (`X-Wspush-Client`).
pub async fn connect(url: &str) -> (Ws, String) {
    let (ws, resp) = within("websocket connect", tokio_tungstenite::connect_async(url))
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let id = resp
        .headers()
        .get("x-wspush-client")
        .expect("X-Wspush-Client header")
        .to_str()
        .unwrap()
        .to_string();
    (ws, id)
}

/// The next data message (pings/pongs skipped); panics on close or timeout.
pub async fn next_msg(ws: &mut Ws) -> Message {
    loop {
        match within("a message", ws.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return m,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// The next text message.
pub async fn next_text(ws: &mut Ws) -> String {
    match next_msg(ws).await {
        Message::Text(t) => t.as_str().to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Waits for the close frame and returns its code.
pub async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match within("a close frame", ws.next()).await {
            Some(Ok(Message::Close(Some(f)))) => return f.code.into(),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Asserts nothing arrives on `ws` within `dur` (used after a later message proves
/// delivery has happened, so the silence is meaningful).
pub async fn assert_silent(ws: &mut Ws, dur: Duration) {
    if let Ok(Some(Ok(m))) = tokio::time::timeout(dur, ws.next()).await {
        if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
            panic!("expected nothing, got {m:?}");
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    within("send", ws.send(Message::text(text))).await.unwrap();
}

/// POSTs JSON; returns status and JSON body.
pub async fn post(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let resp = within("POST", reqwest::Client::new().post(url).json(&body).send())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

pub async fn get(url: &str) -> (u16, serde_json::Value) {
    let resp = within("GET", reqwest::get(url)).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// Publishes text over the HTTP API; the offset.
pub async fn publish(server: &impl Server, channel: &str, data: &str) -> u64 {
    let (status, body) = post(
        &server.http("/api/publish"),
        serde_json::json!({ "channel": channel, "data": data }),
    )
    .await;
    assert_eq!(status, 200, "publish failed: {body}");
    body["offset"].as_u64().expect("offset")
}

/// The built `wspush` binary running `serve`, with stdin and stdout piped.
pub struct Binary {
    pub addr: SocketAddr,
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Lines<BufReader<ChildStdout>>,
    /// Its stderr lines (the banner, the log), read as they come, when piped
    /// (`serve_logged`).
    pub stderr: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
}

impl Binary {
    pub async fn serve(args: &[&str]) -> Self {
        Self::start(args, false).await
    }

    /// `serve --no-console --quiet` with `args`, serving https:// and wss:// with `cert`.
    pub async fn serve_tls(cert: &TestCert, args: &[&str]) -> Self {
        let (c, k) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());
        let tls = ["--no-console", "--quiet", "--tls-cert", c, "--tls-key", k];
        Self::serve(&[&tls[..], args].concat()).await
    }

    /// `serve` with stderr piped into `stderr` (see `expect_stderr`).
    pub async fn serve_logged(args: &[&str]) -> Self {
        Self::start(args, true).await
    }

    async fn start(args: &[&str], logged: bool) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wspush"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("NO_COLOR", "1")
            // Memory tests read VmRSS/VmHWM: by default mimalloc (the server's allocator)
            // commits arena memory eagerly and keeps freed pages resident for a while,
            // so a peak would show the allocator's cache (+17 to +31 MiB after a run of
            // 1 MiB messages, measured) instead of what the server holds at once.
            .env("MIMALLOC_PURGE_DELAY", "0")
            .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if logged {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .kill_on_drop(true)
            .spawn()
            .expect("wspush binary starts");
        let stderr = child.stderr.take().map(|err| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            rx
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = within("the listening line", stdout.next_line())
            .await
            .unwrap()
            .expect("a first line");
        let addr = first
            .strip_prefix("listening on http://")
            .or_else(|| first.strip_prefix("listening on https://"))
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .unwrap();
        Binary {
            addr,
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    /// Reads stderr lines until one satisfies `pred`; returns it.
    pub async fn expect_stderr(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let rx = self.stderr.as_mut().expect("started with serve_logged");
        within("a stderr line", async {
            loop {
                let line = rx.recv().await.expect("stderr open");
                if pred(&line) {
                    return line;
                }
            }
        })
        .await
    }

    /// The stderr lines that arrived so far (without waiting).
    pub fn stderr_now(&mut self) -> Vec<String> {
        let rx = self.stderr.as_mut().expect("started with serve_logged");
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    pub async fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// Reads stdout lines until one satisfies `pred`; returns it.
    pub async fn expect_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        within("a console line", async {
            loop {
                let line = self.stdout.next_line().await.unwrap().expect("stdout open");
                if pred(&line) {
                    return line;
                }
            }
        })
        .await
    }
}

/// A JSON-mode (`wspush.v1`) client: commands with ids, pushes buffered in order.
pub struct JsonClient {
    pub ws: Ws,
    pub id: String,
    next_id: u64,
    pushes: std::collections::VecDeque<serde_json::Value>,
}

impl JsonClient {
    pub async fn connect(url: &str) -> Self {
        let sep = if url.contains('?') { '&' } else { '?' };
        let (ws, id) = connect(&format!("{url}{sep}protocol=json")).await;
        JsonClient {
            ws,
            id,
            next_id: 1,
            pushes: Default::default(),
        }
    }

    async fn frame(&mut self) -> serde_json::Value {
        let text = next_text(&mut self.ws).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("server sent non-JSON {text:?}: {e}"))
    }

    /// Sends a raw text frame.
    pub async fn send_raw(&mut self, text: &str) {
        send_text(&mut self.ws, text).await;
    }

    /// Sends `{"id":N, ...cmd}` and returns the reply with that id; pushes that arrive
    /// meanwhile are kept for `push()`.
    pub async fn cmd(&mut self, mut cmd: serde_json::Value) -> serde_json::Value {
        let id = self.next_id;
        self.next_id += 1;
        cmd["id"] = id.into();
        self.send_raw(&cmd.to_string()).await;
        self.reply(serde_json::json!(id)).await
    }

    /// The next reply whose id is `id`.
    pub async fn reply(&mut self, id: serde_json::Value) -> serde_json::Value {
        loop {
            let v = self.frame().await;
            if v.get("id") == Some(&id) {
                return v;
            }
            assert!(v.get("id").is_none(), "reply to another command: {v}");
            self.pushes.push_back(v);
        }
    }

    /// The next push (a message or a presence event).
    pub async fn push(&mut self) -> serde_json::Value {
        match self.pushes.pop_front() {
            Some(v) => v,
            None => {
                let v = self.frame().await;
                assert!(v.get("id").is_none(), "expected a push, got reply {v}");
                v
            }
        }
    }
}

/// A real `redis-server` on a free port, in its own directory; killed on drop.
pub struct RedisServer {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join(format!("wspush-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = RedisServer {
            port,
            dir,
            child: None,
        };
        redis.launch().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (the test command installs it)");
        self.child = Some(child);
        within("redis PING", async {
            loop {
                if self.command("PING").await.as_deref() == Some("+PONG") {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Sends one inline command; the first reply line.
    pub async fn command(&self, cmd: &str) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        s.write_all(format!("{cmd}\r\n").as_bytes()).await.ok()?;
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .map(str::to_string)
    }

    /// Stops Redis; with `keep_data` its data is saved and comes back on `restart`.
    pub async fn stop(&mut self, keep_data: bool) {
        let cmd = if keep_data {
            "SHUTDOWN SAVE"
        } else {
            "SHUTDOWN NOSAVE"
        };
        let _ = self.command(cmd).await;
        if let Some(mut child) = self.child.take() {
            let _ = within(
                "redis exit",
                tokio::task::spawn_blocking(move || child.wait()),
            )
            .await;
        }
        if !keep_data {
            let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        }
    }

    pub async fn restart(&mut self) {
        self.launch().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A self-signed certificate for `localhost`, written as PEM files (for `tls_cert` /
/// `tls_key`, `wspush::tls::acceptor` or `SSL_CERT_FILE`) in a directory of its own,
/// removed when dropped.
pub struct TestCert {
    pub dir: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

impl TestCert {
    /// A new certificate; `tag` names its directory.
    pub fn localhost(tag: &str) -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("wspush-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
        TestCert {
            dir,
            cert,
            key,
            der: made.cert.der().clone(),
        }
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS connection to `addr` as `localhost`, trusting only `cert`.
pub async fn tls_connect(
    addr: SocketAddr,
    cert: &rustls::pki_types::CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    tls_handshake(TcpStream::connect(addr).await.unwrap(), cert).await
}

/// The TLS handshake as `localhost` on an open TCP connection, trusting only `cert`.
pub async fn tls_handshake(
    tcp: TcpStream,
    cert: &rustls::pki_types::CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the server's certificate")
}

/// How many descriptors process `pid` has open (from `/proc/PID/fd`).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A field of `/proc/PID/status` in KiB (`VmRSS:` now, `VmHWM:` the peak).
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// One value of the server's `/metrics` (panics when it is missing).
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = within(
        "metrics",
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text(),
    )
    .await
    .unwrap();
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}
