//! Executing `wspush.v1` commands for a JSON-mode client. Replies go through the
//! client's outbox, so they are ordered with the messages pushed to it.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use std::sync::atomic::Ordering::Relaxed;

use crate::access::{self, Action, Asker};
use crate::auth::{AuthError, Grant};
use crate::broker::{Position, SubscribeError};
use crate::hub::{Client, Payload};
use crate::limits::Bucket;
use crate::protocol::json::{self, Command, Error, Op};
use crate::state::AppState;

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn position_fields(p: &Position) -> Map<String, Value> {
    fields(json!({ "offset": p.offset, "epoch": &*p.epoch }))
}

/// Per-connection JSON-mode state: none until the first command (then boxed), so an
/// idle JSON-mode session is as small as a raw one (issue #18 item 4). Reads through it
/// see zeros until then; the first write makes it.
#[derive(Debug, Default)]
pub struct JsonState(Option<Box<Counts>>);

/// What `JsonState` holds once the client sent a command.
#[derive(Debug, Default)]
pub struct Counts {
    /// Commands seen so far.
    commands: u32,
    /// Malformed or refused commands so far.
    pub(super) protocol_errors: u32,
    /// The publish rate limit's token bucket, made on the first publish.
    publishes: Option<Box<Bucket>>,
    /// The command budget's token bucket (every command), made on the first command.
    pub(super) budget: Option<Box<Bucket>>,
}

/// The state of a client that sent no command yet.
static NO_COMMANDS: Counts = Counts {
    commands: 0,
    protocol_errors: 0,
    publishes: None,
    budget: None,
};

impl std::ops::Deref for JsonState {
    type Target = Counts;
    fn deref(&self) -> &Counts {
        self.0.as_deref().unwrap_or(&NO_COMMANDS)
    }
}

impl std::ops::DerefMut for JsonState {
    fn deref_mut(&mut self) -> &mut Counts {
        self.0.get_or_insert_with(Default::default)
    }
}

pub use crate::limits::PRESENCE_COST;

/// Verifies a token from a `connect` or `refresh` command.
fn verify(app: &AppState, token: &str) -> Result<Arc<Grant>, Error> {
    let verifier = app
        .verifier
        .as_ref()
        .ok_or_else(|| Error::new("unauthorized", AuthError::NotConfigured.to_string()))?;
    verifier.verify(token).map(Arc::new).map_err(|e| {
        app.hub.stats().auth_failures.fetch_add(1, Relaxed);
        Error::new("unauthorized", e.to_string())
    })
}

/// Checks what the client may do on `channel` (the one access policy, `crate::access`).
pub(super) fn allowed(
    app: &AppState,
    client: &Client,
    channel: &str,
    action: Action,
) -> Result<(), Error> {
    let grant = client.grant();
    access::check(
        app.hub.namespaces(),
        Asker::Native(grant.as_deref()),
        channel,
        action,
    )
    .map_err(|denied| Error::new("forbidden", denied.to_string()))
}

/// Charges a join or leave of a presence channel to the command budget (the command
/// itself was charged one token already).
fn presence_churn(app: &AppState, state: &mut JsonState, channel: &str) -> Result<(), Error> {
    if !app.hub.namespaces().of(channel).presence {
        return Ok(());
    }
    let (rate, burst) = app.config.command_budget();
    if Bucket::take_from(&mut state.budget, PRESENCE_COST - 1.0, rate, burst) {
        Ok(())
    } else {
        app.hub.stats().rate_limited.fetch_add(1, Relaxed);
        Err(over_budget(app))
    }
}

/// The error of a command over the connection's budget.
pub(super) fn over_budget(app: &AppState) -> Error {
    Error::new(
        "rate_limited",
        format!(
            "too many commands: the budget is {} per second (burst {}); presence joins and leaves cost {PRESENCE_COST}",
            app.config.command_rate, app.config.command_burst
        ),
    )
}

fn subscribe_error(e: SubscribeError) -> Error {
    match e {
        SubscribeError::HistoryGone {
            oldest,
            ref position,
        } => {
            let mut err = Error::new("history_gone", e.to_string());
            err.extra.push(("oldest", oldest.into()));
            err.extra.push(("offset", position.offset.into()));
            err.extra.push(("epoch", (*position.epoch).into()));
            err
        }
        SubscribeError::AlreadySubscribed => {
            Error::new("already_subscribed", "already subscribed to this channel")
        }
        SubscribeError::TooManyChannels(_) => Error::new("too_many_channels", e.to_string()),
        SubscribeError::Broker(e) => Error::new("broker_unavailable", e.to_string()),
    }
}

/// Runs one command; the success reply is queued here, an error is returned for the
/// caller to report.
pub(super) async fn execute(
    app: &AppState,
    client: &Arc<Client>,
    state: &mut JsonState,
    cmd: Command,
) -> Result<(), Error> {
    state.commands += 1;
    let hub = &app.hub;
    let reply = |fields: Map<String, Value>| {
        hub.push(client, json::ok(&cmd.id, fields));
    };
    match cmd.op {
        Op::Ping => reply(Map::new()),
        Op::Connect { ref token } => {
            if state.commands != 1 || client.grant().is_some() {
                return Err(Error::new(
                    "bad_request",
                    "`connect` must be the first command of an unauthenticated connection",
                ));
            }
            let grant = verify(app, token)?;
            let user = grant.user.clone();
            hub.authenticate(client, grant);
            reply(fields(
                json!({ "client": client.id.to_string(), "user": &*user }),
            ));
        }
        Op::Refresh { ref token } => {
            let Some(current) = client.grant() else {
                return Err(Error::new(
                    "bad_request",
                    "`refresh` needs a connection authenticated with a token",
                ));
            };
            let grant = verify(app, token)?;
            if grant.user != current.user {
                return Err(Error::new(
                    "forbidden",
                    "a refreshed token must have the same `sub`",
                ));
            }
            let exp = grant.exp;
            hub.authenticate(client, grant);
            reply(fields(json!({ "exp": exp })));
        }
        Op::Subscribe {
            ref channel,
            ref since,
        } => {
            allowed(app, client, channel, Action::Subscribe)?;
            presence_churn(app, state, channel)?;
            let id = cmd.id.clone();
            let ready = Box::new(move |p: &Position| {
                hub.push(client, json::ok(&id, position_fields(p)));
            });
            app.hub
                .subscribe(client, channel, since.clone(), ready)
                .await
                .map_err(subscribe_error)?;
        }
        Op::Unsubscribe { ref channel } => {
            if client.is_subscribed(channel) {
                presence_churn(app, state, channel)?;
            }
            if !app.hub.unsubscribe(client, channel).await {
                return Err(Error::new(
                    "not_subscribed",
                    format!("not subscribed to {channel:?}"),
                ));
            }
            reply(Map::new());
        }
        Op::Publish { ref channel, data } => {
            allowed(app, client, channel, Action::Publish)?;
            let (rate, burst) = (app.config.publish_rate, f64::from(app.config.publish_burst));
            if !Bucket::take_from(&mut state.publishes, 1.0, rate, burst) {
                hub.stats().rate_limited.fetch_add(1, Relaxed);
                return Err(Error::new("rate_limited", "publishing too fast; slow down"));
            }
            let payload = Payload::from_raw_json(data);
            if payload.data.len() > app.config.max_publish_size {
                return Err(Error::new(
                    "too_large",
                    format!(
                        "data is {} bytes; the limit is {}",
                        payload.data.len(),
                        app.config.max_publish_size
                    ),
                ));
            }
            let offset = app
                .hub
                .publish(channel, payload)
                .await
                .map_err(|e| Error::new("broker_unavailable", e.to_string()))?;
            reply(fields(json!({ "offset": offset })));
        }
        Op::Presence { ref channel } => {
            allowed(app, client, channel, Action::Presence)?;
            if !app.hub.namespaces().of(channel).presence {
                return Err(Error::new(
                    "not_available",
                    format!("presence is not enabled for {channel:?}"),
                ));
            }
            let members = app
                .hub
                .presence(channel)
                .await
                .map_err(|e| Error::new("broker_unavailable", e.to_string()))?;
            reply(fields(json!({ "clients": members_json(&members) })));
        }
        Op::History {
            ref channel,
            ref since,
            limit,
        } => {
            allowed(app, client, channel, Action::History)?;
            let page = app
                .hub
                .history(channel, since.clone(), limit)
                .await
                .map_err(subscribe_error)?;
            let mut f = fields(json!({ "messages": messages_json(&page.messages) }));
            f.extend(position_fields(&page.position));
            reply(f);
        }
    }
    Ok(())
}

/// Presence members as JSON.
pub fn members_json(members: &[crate::broker::Member]) -> Value {
    members
        .iter()
        .map(|m| json!({ "client": m.client.to_string(), "user": m.user.as_deref() }))
        .collect()
}

/// Stored messages as JSON.
pub fn messages_json(messages: &[Arc<crate::hub::Message>]) -> Value {
    messages
        .iter()
        .map(|m| json!({ "offset": m.offset, "data": m.payload.to_json() }))
        .collect()
}
