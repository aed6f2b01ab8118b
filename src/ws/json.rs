//! JSON mode (`wspush.v1`): every frame is one command with an id, answered in order with
//! the pushes; too many malformed or refused commands close the connection (1008).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde_json::Value;

use super::close::{Close, CloseReason};
use super::commands::{self, JsonState};
use super::front::Front;
use crate::hub::{Client, Kind};
use crate::limits::Bucket;
use crate::model::{Disconnect, Payload};
use crate::protocol::json;
use crate::state::AppState;

/// The JSON-mode front.
#[derive(Clone)]
pub struct Json(pub AppState);

impl Front for Json {
    type Conn = JsonState;

    fn app(&self) -> &AppState {
        &self.0
    }

    async fn message<'a>(
        &'a self,
        state: &'a mut JsonState,
        client: &'a Arc<Client>,
        payload: Payload,
    ) -> Option<Close> {
        let app = &self.0;
        let (rate, burst) = app.config.command_budget();
        let limit = app.config.command_size_limit();
        let result = if !Bucket::take_from(&mut state.budget, 1.0, rate, burst) {
            // Refused before parsing: a flood costs the server as little as possible.
            app.hub.stats().rate_limited.fetch_add(1, Relaxed);
            Err((Value::Null, commands::over_budget(app)))
        } else if payload.kind == Kind::Binary {
            Err((
                Value::Null,
                json::Error::new("bad_request", "binary frames are not wspush.v1 commands"),
            ))
        } else if payload.data.len() > limit {
            // issue #12 item 9: refused unread (so its id is unknown).
            let message = format!(
                "the command is {} bytes; the limit is {limit} (max_command_size)",
                payload.data.len()
            );
            Err((Value::Null, json::Error::new("too_large", message)))
        } else {
            match json::parse(&payload.data) {
                Ok(cmd) => {
                    let id = cmd.id.clone();
                    Box::pin(commands::execute(app, client, state, cmd))
                        .await
                        .map_err(|e| (id, e))
                }
                Err(rejected) => Err(*rejected),
            }
        };
        let (id, err) = result.err()?;
        app.hub.push(client, json::error(&id, &err));
        if err.code == "unauthorized" {
            return Some(CloseReason::Policy.into());
        }
        if err.is_protocol_error() {
            state.protocol_errors += 1;
            if state.protocol_errors > app.config.max_protocol_errors {
                return Some(CloseReason::Policy.into());
            }
        }
        None
    }

    fn close(&self, reason: Disconnect) -> Close {
        CloseReason::of(reason).into()
    }

    async fn closed(&self, _state: &mut JsonState, _client: &Arc<Client>) {}
}
