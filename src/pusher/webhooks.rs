//! Webhooks: events go into a bounded queue (never blocking the caller; a full queue
//! drops and counts), a worker batches them per endpoint and POSTs
//! `{"time_ms":..,"events":[..]}` signed with `X-Pusher-Key` and `X-Pusher-Signature`
//! (hex HMAC-SHA256 of the body with the app secret), retrying with bounded backoff on
//! 5xx answers and connection errors (never on 4xx). `channel_vacated` and
//! `member_removed` wait `webhook_delay_ms` first, behind a marker held in the broker: a
//! `channel_occupied` / `member_added` of the same channel (and user) on any node within
//! the wait takes the marker, and neither is sent (a page reload does not flap). At
//! shutdown everything pending is sent at once, within the shutdown grace.

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
use crate::broker::Cluster;

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
    /// Starts the worker when `enabled` (some app has webhooks); delayed events hold
    /// their markers in `cluster`.
    pub fn start(enabled: bool, cluster: Arc<dyn Cluster>) -> Self {
        let stop = CancellationToken::new();
        let (tx, worker) = if enabled {
            let (tx, rx) = mpsc::channel(QUEUE);
            let task = worker(rx, stop.clone(), cluster);
            (Some(tx), Some(tokio::spawn(task)))
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

/// The marker of a delayed event and of the event that cancels it: the app, the channel
/// and, for members, the user; `None` for events that are neither.
fn pair_key(app: &str, event: &Value) -> Option<(bool, String)> {
    let name = event["name"].as_str()?;
    let channel = event["channel"].as_str()?;
    let (leave, user) = match name {
        "channel_vacated" => (true, None),
        "channel_occupied" => (false, None),
        "member_removed" => (true, Some(&event["user_id"])),
        "member_added" => (false, Some(&event["user_id"])),
        _ => return None,
    };
    let mut key = format!("webhook\n{app}\n{channel}");
    if let Some(user) = user {
        key.push('\n');
        key.push_str(&user.to_string());
    }
    Some((leave, key))
}

/// Events waiting for their delay: (when, marker key, job).
type Waiting = Vec<(Instant, String, Job)>;

/// What the worker does with a job before batching: a leave waits behind a held marker;
/// a join whose leave is still waiting takes its marker and goes nowhere.
async fn admit(cluster: &dyn Cluster, waiting: &mut Waiting, job: Job) -> Option<Job> {
    let delay = u64::try_from(job.tenant.app.webhook_delay_ms.as_millis()).unwrap_or(u64::MAX);
    let Some((leave, key)) = pair_key(&job.tenant.app.id, &job.event).filter(|_| delay > 0) else {
        return Some(job);
    };
    if !leave {
        // A failed broker call sends the join: better twice than lost.
        return match cluster.take(&key).await {
            Ok(true) => None,
            _ => Some(job),
        };
    }
    if waiting.len() >= QUEUE {
        return Some(job);
    }
    let _ = cluster
        .hold(&key, delay.saturating_mul(2).saturating_add(10_000))
        .await;
    waiting.push((Instant::now() + Duration::from_millis(delay), key, job));
    None
}

/// The waiting events that are due (all of them at shutdown) whose markers are still
/// held: no join cancelled them.
async fn due_leaves(cluster: &dyn Cluster, waiting: &mut Waiting, all: bool) -> Vec<Job> {
    let now = Instant::now();
    let mut out = Vec::new();
    let mut i = 0;
    while i < waiting.len() {
        if all || waiting[i].0 <= now {
            let (_, key, job) = waiting.swap_remove(i);
            if cluster.take(&key).await.unwrap_or(true) {
                out.push(job);
            }
        } else {
            i += 1;
        }
    }
    out
}

async fn worker(mut rx: mpsc::Receiver<Job>, stop: CancellationToken, cluster: Arc<dyn Cluster>) {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .unwrap_or_default();
    // Requests in flight; dropping the set (the worker aborted) aborts them.
    let mut sending = JoinSet::new();
    let mut batches: HashMap<(String, String), Batch> = HashMap::new();
    let mut waiting: Waiting = Vec::new();
    loop {
        let next_due = batches
            .values()
            .map(|b| b.due)
            .chain(waiting.iter().map(|w| w.0))
            .min();
        tokio::select! {
            job = rx.recv() => match job {
                Some(job) => {
                    if let Some(job) = admit(&*cluster, &mut waiting, job).await {
                        collect(&mut batches, job);
                    }
                }
                None => break,
            },
            _ = sleep_until(next_due) => {}
            Some(_) = sending.join_next(), if !sending.is_empty() => {}
            _ = stop.cancelled() => break,
        }
        for job in due_leaves(&*cluster, &mut waiting, false).await {
            collect(&mut batches, job);
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
    for job in due_leaves(&*cluster, &mut waiting, true).await {
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
            Ok(resp) if resp.status().is_client_error() => {
                // The receiver refuses this request: sending it again changes nothing.
                let status = resp.status();
                tracing::warn!(url = %batch.url, %status, attempt, "webhook refused; not retried");
                return;
            }
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
