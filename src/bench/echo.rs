//! `wspush bench echo`: C clients each doing sequential round trips (a masked text frame
//! out, its echo back) against a server that echoes (`wspush serve --upstream echo`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

use super::stats::{self, Histogram, Stamp, STAMP_LEN};
use super::sys;
use super::wire::{Conn, Url};
use super::{round, si, Report, Target};

/// `wspush bench echo` options.
#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
    /// Clients, each with one round trip in flight.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many round trips in total.
    #[arg(long)]
    pub round_trips: Option<u64>,
    /// Payload bytes (at least 34: the stamp).
    #[arg(long, default_value_t = 128)]
    pub payload: usize,
}

#[derive(Default)]
struct Shared {
    started: Cell<u64>,
    done: Cell<u64>,
    mismatched: Cell<u64>,
    failed: Cell<u64>,
    first_error: RefCell<Option<String>>,
    latency: RefCell<Histogram>,
}

/// Runs the scenario.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    if opts.payload < STAMP_LEN {
        bail!("--payload must be at least {STAMP_LEN} bytes");
    }
    let target = &opts.target;
    if target.protocol != super::Protocol::Wspush {
        bail!("echo measures plain WebSocket round trips: use --protocol wspush");
    }
    let ws_url = target.ws_url(false);
    let url = Url::parse(&ws_url, "ws").await?;
    let opened = target.open(&url, opts.clients, false).await;
    if opened.conns.is_empty() {
        bail!(
            "no client could connect to {ws_url}: {}",
            opened.first_error.unwrap_or_default()
        );
    }
    let connected = opened.conns.len();
    let window = super::cpu::Window::start(target);
    let own_before = sys::cpu_seconds(None);
    let shared = Rc::new(Shared::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(opts.duration);
    let cap = opts.round_trips.unwrap_or(u64::MAX);
    let tasks: Vec<_> = opened
        .conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            tokio::task::spawn_local(client(i, conn, shared.clone(), deadline, cap, opts.payload))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let server_cpu = window.stop();
    let own_cpu = sys::cpu_seconds(None).zip(own_before).map(|(a, b)| a - b);

    let done = shared.done.get();
    let per_second = done as f64 / elapsed.max(1e-9);
    let latency = shared.latency.borrow().clone();

    let mut r = Report::new("echo", target, &ws_url);
    r.row("clients", format!("{connected} of {}", opts.clients));
    r.row(
        "round trips",
        format!(
            "{done} in {elapsed:.2} s ({} mismatched, {} clients failed)",
            shared.mismatched.get(),
            shared.failed.get()
        ),
    );
    r.row("round trips/s", si(per_second));
    r.row("latency", latency.summary());
    if let Some(own) = own_cpu {
        r.row("generator CPU", format!("{own:.2} s"));
    }
    if let Some(e) = shared.first_error.borrow().as_deref() {
        r.row("first error", e);
    }
    r.field("clients", connected as u64);
    r.field("connect_failed", opened.failed as u64);
    r.field("payload", opts.payload as u64);
    r.field("round_trips", done);
    r.field("mismatched", shared.mismatched.get());
    r.field("failed_clients", shared.failed.get());
    r.field("elapsed_s", round(elapsed, 3));
    r.field("round_trips_per_s", round(per_second, 0));
    r.field("latency_us", latency.json_us());
    if let Some(cpu) = server_cpu {
        cpu.report(&mut r, done, "round_trips");
    }
    r.field("client_cpu_s", own_cpu.map(|c| round(c, 2)));
    Ok(r)
}

/// One client: send, wait for the identical echo, repeat.
async fn client(
    index: usize,
    mut conn: Conn,
    shared: Rc<Shared>,
    deadline: Instant,
    cap: u64,
    len: usize,
) {
    let mut payload = stats::payload(len);
    let mask = (index as u32 | 0x0101_0101).to_be_bytes();
    let mut seq = 0;
    let give_up = deadline + Duration::from_secs(5);
    let fail = |e: String| {
        shared.failed.set(shared.failed.get() + 1);
        shared.first_error.borrow_mut().get_or_insert(e);
    };
    while shared.started.get() < cap && Instant::now() < deadline {
        shared.started.set(shared.started.get() + 1);
        seq += 1;
        Stamp {
            source: (index % 100) as u32,
            seq,
            sent_ns: sys::wall_ns(),
        }
        .write(&mut payload);
        let sent = Instant::now();
        if let Err(e) = conn.send_text(&payload, mask).await {
            return fail(e.to_string());
        }
        let mut got = None;
        while got.is_none() {
            let mut on_message = |data: &[u8], _| {
                if got.is_none() {
                    got = Some(data == payload.as_slice());
                }
            };
            match tokio::time::timeout_at(give_up, conn.recv(&mut on_message)).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return fail("the server closed the connection".into()),
                Ok(Err(e)) => return fail(e.to_string()),
                Err(_) => return fail("no echo within 5 s after the end".into()),
            }
        }
        shared
            .latency
            .borrow_mut()
            .record(sent.elapsed().as_nanos() as u64);
        shared.done.set(shared.done.get() + 1);
        if got == Some(false) {
            shared.mismatched.set(shared.mismatched.get() + 1);
        }
    }
}
