//! `run(listener, runtime, console, shutdown)`: builds the hub from the runtime objects
//! `setup::build` made of the configuration, serves HTTP and WebSocket connections until
//! `shutdown` resolves, then closes every client with 1001.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::broker::{Broker, Cluster, Memory, Redis};
use crate::console::{self, Console};
use crate::http;
use crate::hub::{Hub, QueueLimits, Registry};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::model::Disconnect;
use crate::pusher::format::PUSHER;
use crate::pusher::PusherFront;
use crate::setup::Runtime;
use crate::shutdown::Shutdown;
use crate::sse::format::{NDJSON, SSE};
use crate::sse::{self, Watch};
use crate::state::{AppState, Shared};
use crate::upstream::Upstream;
use crate::ws::formats::{JSON, RAW};

/// How the server's console is wired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleMode {
    /// Print to stdout and read commands from stdin (the binary).
    Stdio,
    /// No console (library users and tests that drive the API).
    Off,
}

/// Serves on `listener` until `shutdown` resolves (or `/quit` on the console).
pub async fn run(
    listener: TcpListener,
    runtime: Runtime,
    console_mode: ConsoleMode,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let Runtime {
        config,
        verifier,
        apps,
        tls,
        proxies,
        namespaces,
    } = runtime;
    let limits = QueueLimits {
        max_frames: config.queue_max_frames,
        max_bytes: config.queue_max_bytes,
    };
    let redis_options = config.redis_options();
    // One fan-out flusher lane per runtime worker thread.
    let lanes = tokio::runtime::Handle::current().metrics().num_workers();
    let coalesce_ms = u32::try_from(config.write_coalesce_ms.as_millis()).unwrap_or(u32::MAX);
    // The broker, seen as the hub's core broker and as the Pusher front's cluster.
    type Brokers = (Arc<Registry>, Arc<dyn Broker>, Arc<dyn Cluster>);
    let (registry, broker, cluster): Brokers = if let Some(redis_options) = redis_options {
        let registry =
            Arc::new(Registry::for_node(limits, node_id()).coalescing(coalesce_ms, lanes));
        let redis = Redis::connect(&redis_options, registry.clone(), namespaces.clone())
            .await
            .map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e.to_string())
            })?;
        redis.set_node_ttl(u64::try_from(config.node_ttl_ms.as_millis()).unwrap_or(u64::MAX));
        let redis = Arc::new(redis);
        (registry, redis.clone(), redis)
    } else {
        let registry = Arc::new(Registry::new(limits).coalescing(coalesce_ms, lanes));
        let memory = Arc::new(Memory::new(registry.clone(), namespaces.clone()));
        (registry, memory.clone(), memory)
    };
    let hub = Hub::new(registry.clone(), broker.clone(), namespaces)
        .max_channels_per_client(config.max_channels_per_connection);
    let console = match console_mode {
        ConsoleMode::Stdio => Console::stdout(),
        ConsoleMode::Off => Console::silent(),
    };
    let stop = Shutdown::default();
    if console_mode == ConsoleMode::Stdio && !config.no_console {
        console::spawn_input(hub.clone(), console.clone(), stop.token.clone());
    }
    let console = if config.quiet {
        Console::silent()
    } else {
        console
    };
    let pusher = Arc::new(crate::pusher::Pusher::new(
        apps,
        hub.clone(),
        cluster,
        whole_secs(config.ping_interval),
    ));
    // Dead nodes are looked for as often as live ones refresh their heartbeat.
    pusher.start_reaper(config.node_ttl_ms.get() / 3);
    let state = AppState::new(Shared {
        metrics: Arc::new(Metrics::new(registry.clone(), broker.clone())),
        hub: hub.clone(),
        upstream: Arc::new(Upstream::with_exec_limit(
            config.upstream.clone(),
            hub.clone(),
            console,
            config.max_exec_processes,
        )),
        config: config.clone(),
        shutdown: stop.clone(),
        limits: Arc::new(Limits::new(
            config.max_connections,
            config.max_connections_per_ip,
        )),
        verifier,
        refusals: Arc::default(),
    });
    // Every front's format is named in the metrics from the start.
    for format in [&RAW, &JSON, &PUSHER, &SSE, &NDJSON] {
        registry.stats.serve_format(format);
    }
    let fronts = crate::pusher::router(PusherFront {
        app: state.clone(),
        pusher: pusher.clone(),
    })
    .merge(crate::sse::router(state.clone()));
    let app = state.clone();
    let router = http::router(state, fronts);

    // One flusher task per runtime worker: fan-out writes spread over the cores.
    let flushers: Vec<_> = (0..registry.coalescer.lanes())
        .map(|lane| {
            let registry = registry.clone();
            tokio::spawn(async move { registry.run_flusher(lane).await })
        })
        .collect();
    let sweeper = {
        let hub = hub.clone();
        let broker = broker.clone();
        let (interval, timeout) = (
            whole_secs(config.ping_interval),
            whole_secs(config.ping_timeout),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                hub.registry().sweep(interval, timeout);
                broker.sweep().await;
            }
        })
    };

    tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "serving");
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            _ = stop.token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Every request knows where it comes from: `ConnectInfo` is the client (behind a
        // trusted proxy, the address it forwards for), `Remote` has the details.
        let proxies = proxies.clone();
        let direct = (app.clone(), proxies.clone());
        // The connection's streaming client (SSE), watched beside the connection.
        let watch = Arc::new(Watch::default());
        let watched = watch.clone();
        let service = router.clone().map_request(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                let remote = proxies.remote(peer, req.headers());
                req.extensions_mut().insert(ConnectInfo(remote.addr));
                req.extensions_mut().insert(remote);
                req.extensions_mut().insert(watched.clone());
                req
            },
        );
        let token = stop.token.clone();
        let handshake = config.handshake_timeout();
        let tls = tls.clone();
        stop.tracker.spawn(async move {
            let service = TowerToHyperService::new(service);
            match tls {
                None => {
                    // A stream asked for first thing is served on the socket itself.
                    let (app, proxies) = direct;
                    let pass = sse::direct::serve_or_pass(&app, &proxies, stream, peer, handshake);
                    if let Some(stream) = pass.await {
                        drop((app, proxies));
                        serve_http(stream, service, handshake, token, watch, peer).await
                    }
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_http(stream, service, handshake, token, watch, peer).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }

    tracing::info!("shutting down: closing every client with 1001");
    drop(listener);
    stop.token.cancel();
    sweeper.abort();
    // Flush whatever waits so queued messages go out before the close frames.
    flushers.iter().for_each(|f| f.abort());
    registry.flush_all();
    registry.close_all(Disconnect::ShuttingDown);
    let grace = config.shutdown_grace.get();
    let deadline = tokio::time::Instant::now() + grace;
    if stop.drain(grace).await {
        tracing::info!("all connections closed");
    } else {
        tracing::warn!(?grace, "grace period over; dropping remaining connections");
    }
    // Webhooks still waiting (batches, retries, the events of the closes above) go out
    // in what is left of the grace, and at least a second of it.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !pusher
        .webhooks
        .drain(left.max(grace.min(Duration::from_secs(1))))
        .await
    {
        tracing::warn!("webhooks not delivered before the grace period ended were dropped");
    }
    Ok(())
}

/// Serves HTTP/1.1 (with upgrades) on one connection until it ends or shutdown starts.
async fn serve_http<I, S>(
    io: I,
    service: S,
    handshake: Duration,
    token: tokio_util::sync::CancellationToken,
    watch: Arc<Watch>,
    peer: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
        > + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "http connection ended");
            }
        }
        _ = token.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
        // Its stream was asked to close (kicked, slow, timed out): the body ends it,
        // unless hyper, backed up by a client that does not read, no longer polls the
        // body; then the connection is dropped after a short while.
        _ = watch.closing() => {
            let _ = tokio::time::timeout(STREAM_CLOSE_WAIT, conn).await;
        }
    }
}

/// How long a streaming connection asked to close has to end by itself.
const STREAM_CLOSE_WAIT: Duration = Duration::from_secs(3);

/// A random, non-zero node id for this process (the high half of its client ids).
fn node_id() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() as u32).max(1)
}

/// A duration option as the whole seconds the ping sweep and Pusher's
/// `activity_timeout` count in (rounded up, at most `u32::MAX`).
fn whole_secs(d: crate::config::Secs) -> u32 {
    u32::try_from(d.whole_secs()).unwrap_or(u32::MAX)
}
