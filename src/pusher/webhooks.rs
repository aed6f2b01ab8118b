//! Webhooks: events go into a bounded queue (never blocking the caller; a full queue
//! drops and counts), a worker batches them per endpoint and POSTs
//! `{"time_ms":..,"events":[..]}` signed with `X-Pusher-Key` and `X-Pusher-Signature`
//! (hex HMAC-SHA256 of the body with the app secret), retrying with backoff. At shutdown
//! everything pending is sent at once, within the shutdown grace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::apps::Tenant;
use super::auth;

/// Events waiting for the worker at most.
const QUEUE: usize = 10_000;
/// Attempts per request (the first and the retries).
const ATTEMPTS: u32 = 5;
/// Requests in flight at once.
const IN_FLIGHT: usize = 32;
/// Time limit of one request.
const TIMEOUT: Duration = Duration::from_secs(10);

struct Job {
    tenant: Arc<Tenant>,
    event: Value,
}

/// The webhook queue's sending end.
#[derive(Debug)]
pub struct Webhooks {
    tx: Option<mpsc::Sender<Job>>,
    /// Events dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Tells the worker to send everything now and finish (shutdown).
    stop: CancellationToken,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Webhooks {
    /// Starts the worker when `enabled` (some app has webhooks).
    pub fn start(enabled: bool) -> Self {
        let stop = CancellationToken::new();
        let (tx, worker) = if enabled {
            let (tx, rx) = mpsc::channel(QUEUE);
            (Some(tx), Some(tokio::spawn(worker(rx, stop.clone()))))
        } else {
            (None, None)
        };
        Webhooks {
            tx,
            dropped: AtomicU64::new(0),
            stop,
            worker: Mutex::new(worker),
        }
    }

    /// Queues `event` (`{"name":..,"channel":..,...}`) for the app's webhooks that want it.
    pub fn emit(&self, tenant: &Arc<Tenant>, event: Value) {
        let Some(tx) = &self.tx else { return };
        let name = event["name"].as_str().unwrap_or_default();
        if !tenant.app.webhooks.iter().any(|w| w.wants(name)) {
            return;
        }
        let job = Job {
            tenant: tenant.clone(),
            event,
        };
        if tx.try_send(job).is_err() {
            self.dropped.fetch_add(1, Relaxed);
            tracing::warn!(app = %tenant.app.id, "webhook queue full; event dropped");
        }
    }

    /// At shutdown: sends every queued and batched event at once (batch windows are cut
    /// short) and waits for the requests, retries included, for at most `within`; what is
    /// still unsent then is dropped. True when everything was delivered or given up.
    pub async fn drain(&self, within: Duration) -> bool {
        self.stop.cancel();
        let Some(mut worker) = self.worker.lock().take() else {
            return true;
        };
        match tokio::time::timeout(within, &mut worker).await {
            Ok(_) => true,
            Err(_) => {
                worker.abort(); // and with it the requests in flight
                false
            }
        }
    }
}

/// Events collected for one endpoint.
struct Batch {
    tenant: Arc<Tenant>,
    url: String,
    events: Vec<Value>,
    due: Instant,
}

async fn worker(mut rx: mpsc::Receiver<Job>, stop: CancellationToken) {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .unwrap_or_default();
    // Requests in flight; dropping the set (the worker aborted) aborts them.
    let mut sending = JoinSet::new();
    let mut batches: HashMap<(String, String), Batch> = HashMap::new();
    loop {
        let next_due = batches.values().map(|b| b.due).min();
        tokio::select! {
            job = rx.recv() => match job {
                Some(job) => collect(&mut batches, job),
                None => break,
            },
            _ = sleep_until(next_due) => {}
            Some(_) = sending.join_next(), if !sending.is_empty() => {}
            _ = stop.cancelled() => break,
        }
        let now = Instant::now();
        let due: Vec<_> = batches
            .iter()
            .filter(|(_, b)| b.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let batch = batches.remove(&key).expect("listed above");
            dispatch(&mut sending, &client, batch).await;
        }
    }
    // Shutdown: what is queued joins its batch, and every batch goes now.
    rx.close();
    while let Ok(job) = rx.try_recv() {
        collect(&mut batches, job);
    }
    for (_, batch) in batches.drain() {
        dispatch(&mut sending, &client, batch).await;
    }
    while sending.join_next().await.is_some() {}
}

/// Adds an event to the batch of each of its app's webhooks that wants it.
fn collect(batches: &mut HashMap<(String, String), Batch>, Job { tenant, event }: Job) {
    let name = event["name"].as_str().unwrap_or_default().to_string();
    for hook in tenant.app.webhooks.iter().filter(|w| w.wants(&name)) {
        let key = (tenant.app.id.clone(), hook.url.clone());
        let batch = batches.entry(key).or_insert_with(|| Batch {
            tenant: tenant.clone(),
            url: hook.url.clone(),
            events: Vec::new(),
            due: Instant::now() + hook.batch_ms.get(),
        });
        batch.events.push(event.clone());
    }
}

/// Starts sending a batch, once fewer than `IN_FLIGHT` requests are under way.
async fn dispatch(sending: &mut JoinSet<()>, client: &reqwest::Client, batch: Batch) {
    while sending.len() >= IN_FLIGHT {
        sending.join_next().await;
    }
    let client = client.clone();
    sending.spawn(async move { send(&client, &batch).await });
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// The body of a webhook request.
pub fn body(events: &[Value], time_ms: u64) -> String {
    json!({ "time_ms": time_ms, "events": events }).to_string()
}

async fn send(client: &reqwest::Client, batch: &Batch) {
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let body = body(&batch.events, time_ms);
    let app = &batch.tenant.app;
    let signature = auth::sign(&app.secret, body.as_bytes());
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        let result = client
            .post(&batch.url)
            .header("content-type", "application/json")
            .header("x-pusher-key", &app.key)
            .header("x-pusher-signature", &signature)
            .body(body.clone())
            .send()
            .await;
        match result {
            Ok(resp) if resp.status().is_success() => return,
            Ok(resp) => {
                tracing::warn!(url = %batch.url, status = %resp.status(), attempt, "webhook refused")
            }
            Err(e) => tracing::warn!(url = %batch.url, error = %e, attempt, "webhook failed"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    tracing::error!(url = %batch.url, events = batch.events.len(), "webhook given up");
}
