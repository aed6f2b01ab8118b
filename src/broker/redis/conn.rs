//! How a node reaches Redis: standalone servers (each a shard of the channels), one
//! Redis Cluster (commands routed by slot, following `MOVED`/`ASK` and failovers), or a
//! master found through Sentinel (re-discovered when it fails or turns read-only). TLS
//! (`rediss://`) in every mode, with an optional CA file.
//!
//! Pub/sub is plain (not sharded): in a Redis Cluster a `PUBLISH` reaches every node, so
//! a node listens on any one of them and moves to another when that one fails; a slot
//! migration does not touch it. What was published while it moved is caught up from
//! history by the subscription task.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Client, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};

use super::{unavailable, CALL_TIMEOUT};
use crate::broker::BrokerError;

/// How the Redis URLs of `broker` are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// Each URL is a standalone Redis; channels are sharded over them.
    #[default]
    Standalone,
    /// The URLs are nodes of one Redis Cluster (list several: any reachable one will do).
    Cluster,
    /// The URLs are Sentinels watching the master `redis_sentinel_master`.
    Sentinel,
}

impl std::str::FromStr for RedisMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "standalone" => Ok(RedisMode::Standalone),
            "cluster" => Ok(RedisMode::Cluster),
            "sentinel" => Ok(RedisMode::Sentinel),
            _ => Err(format!(
                "{s:?}: expected `standalone`, `cluster` or `sentinel`"
            )),
        }
    }
}

impl std::fmt::Display for RedisMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster",
            RedisMode::Sentinel => "sentinel",
        })
    }
}

/// Everything the Redis broker is told about reaching Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The `redis://` or `rediss://` URLs (see [`RedisMode`]).
    pub urls: Vec<String>,
    /// How the URLs are read.
    pub mode: RedisMode,
    /// Prefix of every key and pub/sub topic.
    pub prefix: String,
    /// PEM CA certificate(s) trusted for `rediss://` instead of the system store.
    pub ca_file: Option<PathBuf>,
    /// The Sentinel master name (sentinel mode).
    pub sentinel_master: String,
}

impl RedisOptions {
    /// Standalone servers at `urls` with the default prefix.
    pub fn standalone(urls: &[String]) -> Self {
        RedisOptions {
            urls: urls.to_vec(),
            mode: RedisMode::Standalone,
            prefix: "wspush:".into(),
            ca_file: None,
            sentinel_master: "mymaster".into(),
        }
    }

    fn certificates(&self) -> Result<Option<redis::TlsCertificates>, BrokerError> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path)
            .map_err(|e| unavailable(format!("redis_ca_file {}: {e}", path.display())))?;
        Ok(Some(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }))
    }

    fn client(&self, url: &str) -> Result<Client, BrokerError> {
        let client = match self.certificates()? {
            Some(certs) => Client::build_with_tls(url, certs),
            None => Client::open(url),
        };
        client.map_err(|e| unavailable(format!("{}: {e}", redacted(url))))
    }
}

/// A URL as logged: without its password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(2))
        .set_number_of_retries(1)
        .set_max_delay(1000)
}

async fn manager(client: &Client, what: &str) -> Result<ConnectionManager, BrokerError> {
    tokio::time::timeout(
        CALL_TIMEOUT,
        client.get_connection_manager_with_config(manager_config()),
    )
    .await
    .map_err(|_| unavailable(format!("{what}: connect timed out")))?
    .map_err(|e| unavailable(format!("{what}: {e}")))
}

/// A command connection, whatever the mode (cheap to clone).
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<Sentinel>),
}

/// Where a shard's pub/sub connections come from.
pub(super) enum Source {
    Single(Client),
    /// Cluster nodes, tried in turn from the one after the last used.
    Cluster(Vec<Client>, Mutex<usize>),
    Sentinel(Arc<Sentinel>),
}

/// One connection per shard: the command connection and the pub/sub source.
pub(super) async fn connect(options: &RedisOptions) -> Result<Vec<(Conn, Source)>, BrokerError> {
    match options.mode {
        RedisMode::Standalone => {
            let mut shards = Vec::new();
            for url in &options.urls {
                let client = options.client(url)?;
                let conn = manager(&client, &redacted(url)).await?;
                shards.push((Conn::Single(conn), Source::Single(client)));
            }
            Ok(shards)
        }
        RedisMode::Cluster => {
            let mut builder = redis::cluster::ClusterClient::builder(options.urls.clone())
                .connection_timeout(Duration::from_secs(1))
                .response_timeout(Duration::from_secs(2))
                .retries(3);
            if let Some(certs) = options.certificates()? {
                builder = builder.certs(certs);
            }
            let client = builder.build().map_err(unavailable)?;
            let conn = tokio::time::timeout(CALL_TIMEOUT, client.get_async_connection())
                .await
                .map_err(|_| unavailable("redis cluster: connect timed out"))?
                .map_err(|e| unavailable(format!("redis cluster: {e}")))?;
            let nodes = options
                .urls
                .iter()
                .map(|u| options.client(u))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![(
                Conn::Cluster(conn),
                Source::Cluster(nodes, Mutex::new(0)),
            )])
        }
        RedisMode::Sentinel => {
            let sentinel = Arc::new(Sentinel::new(options)?);
            // Fail at start when no master can be found.
            sentinel.manager().await?;
            Ok(vec![(
                Conn::Sentinel(sentinel.clone()),
                Source::Sentinel(sentinel),
            )])
        }
    }
}

impl Source {
    /// A new pub/sub connection (to a cluster's next node, or the current master).
    pub(super) async fn pubsub(&self) -> RedisResult<PubSub> {
        match self {
            Source::Single(client) => client.get_async_pubsub().await,
            Source::Cluster(nodes, next) => {
                let mut last = None;
                for _ in 0..nodes.len() {
                    let i = {
                        let mut next = next.lock();
                        let i = *next % nodes.len();
                        *next = i + 1;
                        i
                    };
                    match nodes[i].get_async_pubsub().await {
                        Ok(pubsub) => {
                            // Stay with this node next time.
                            *next.lock() = i;
                            return Ok(pubsub);
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    (redis::ErrorKind::InvalidClientConfig, "no cluster nodes").into()
                }))
            }
            Source::Sentinel(sentinel) => sentinel.client().await?.get_async_pubsub().await,
        }
    }
}

/// The master found through Sentinel, looked up again when it fails.
pub(super) struct Sentinel {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<ConnectionManager>>,
}

impl Sentinel {
    fn new(options: &RedisOptions) -> Result<Self, BrokerError> {
        let infos = options
            .urls
            .iter()
            .map(|u| u.as_str().into_connection_info().map_err(unavailable))
            .collect::<Result<Vec<_>, _>>()?;
        let first = infos
            .first()
            .ok_or_else(|| unavailable("no sentinel URL"))?
            .clone();
        let mut builder = SentinelClientBuilder::new(
            infos.into_iter().map(|i| i.addr),
            options.sentinel_master.clone(),
            SentinelServerType::Master,
        )
        .map_err(unavailable)?;
        // The master is reached as the sentinels are: with TLS when they use rediss://,
        // with the first URL's user, password and db.
        if let redis::ConnectionAddr::TcpTls { insecure, .. } = first.addr {
            let mode = if insecure {
                redis::TlsMode::Insecure
            } else {
                redis::TlsMode::Secure
            };
            builder = builder
                .set_client_to_redis_tls_mode(mode)
                .set_client_to_sentinel_tls_mode(mode);
        }
        if let Some(certs) = options.certificates()? {
            builder = builder
                .set_client_to_redis_certificates(certs.clone())
                .set_client_to_sentinel_certificates(certs);
        }
        if first.redis.db != 0 {
            builder = builder.set_client_to_redis_db(first.redis.db);
        }
        if let Some(user) = first.redis.username.clone() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = first.redis.password.clone() {
            builder = builder.set_client_to_redis_password(password);
        }
        let client = builder.build().map_err(unavailable)?;
        Ok(Sentinel {
            sentinel: tokio::sync::Mutex::new(client),
            current: Mutex::new(None),
        })
    }

    /// A client of the master the sentinels name now.
    async fn client(&self) -> RedisResult<Client> {
        let mut sentinel = self.sentinel.lock().await;
        match tokio::time::timeout(CALL_TIMEOUT, sentinel.async_get_client()).await {
            Ok(client) => client,
            Err(_) => Err((redis::ErrorKind::IoError, "sentinel timed out").into()),
        }
    }

    async fn manager(&self) -> Result<ConnectionManager, BrokerError> {
        if let Some(conn) = self.current.lock().clone() {
            return Ok(conn);
        }
        let client = self.client().await.map_err(unavailable)?;
        let conn = manager(&client, "redis master").await?;
        tracing::info!(master = ?client.get_connection_info().addr, "redis master found through sentinel");
        *self.current.lock() = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the master after an error that says it is gone or no longer master.
    fn failed(&self, e: &redis::RedisError) {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.kind() == redis::ErrorKind::ReadOnly
        {
            *self.current.lock() = None;
        }
    }
}

fn broker_to_redis(e: BrokerError) -> redis::RedisError {
    (redis::ErrorKind::IoError, "redis master", e.to_string()).into()
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => Box::pin(async move {
                let mut conn = s.manager().await.map_err(broker_to_redis)?;
                let result = conn.req_packed_command(cmd).await;
                if let Err(e) = &result {
                    s.failed(e);
                }
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(s) => Box::pin(async move {
                let mut conn = s.manager().await.map_err(broker_to_redis)?;
                let result = conn.req_packed_commands(cmd, offset, count).await;
                if let Err(e) = &result {
                    s.failed(e);
                }
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(_) => 0,
        }
    }
}
