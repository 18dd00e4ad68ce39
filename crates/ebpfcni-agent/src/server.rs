//! The API on the unix socket: HTTP/1.1 + JSON (axum). Handlers hand the
//! work to the synchronous [`Agent`] on a blocking thread; every error is
//! an [`ApiError`] body with its status.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ebpfcni_api::{
    ApiError, Deleted, EndpointRequest, EndpointState, GcReply, GcRequest, PolicyDeletion, SelectorRule,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::agent::{Agent, AgentError};
use crate::runtime::Runtime;

/// What the handlers share: the agent, and the runtime that tells labels.
#[derive(Clone)]
pub struct Shared {
    pub agent: Arc<Agent>,
    pub runtime: Option<Runtime>,
}

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/healthz", get(health))
        .route("/v1/endpoints", get(endpoints).post(create))
        .route("/v1/endpoints/{container}/{ifname}", get(endpoint).delete(delete))
        .route("/v1/gc", post(gc))
        .route("/v1/identities", get(identities))
        .route(
            "/v1/policies",
            get(policies).post(apply_policies).delete(delete_policies),
        )
        .route(
            "/v1/selector-rules",
            post(|s, b| selector_rule(s, b, true)).delete(|s, b| selector_rule(s, b, false)),
        )
        .fallback(|| async { failure(StatusCode::NOT_FOUND, "not-found", "no such API path".into()) })
        .with_state(shared)
}

fn failure(status: StatusCode, kind: &str, error: String) -> Response {
    (
        status,
        Json(ApiError {
            kind: kind.into(),
            error,
        }),
    )
        .into_response()
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let status = match self {
            AgentError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AgentError::Conflict(_) => StatusCode::CONFLICT,
            AgentError::NotFound(_) => StatusCode::NOT_FOUND,
            AgentError::Exhausted(_) | AgentError::MapFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            AgentError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        failure(status, self.kind(), self.to_string())
    }
}

/// A JSON body, or a 400 that names what is wrong with it.
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AgentError> {
    serde_json::from_slice(bytes).map_err(|e| AgentError::BadRequest(format!("the request body: {e}")))
}

/// Runs `work` on a blocking thread (map and store writes are system calls).
async fn blocking<T: Serialize + Send + 'static>(
    work: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => AgentError::Internal(format!("the request's worker failed: {e}")).into_response(),
    }
}

async fn health(State(shared): State<Shared>) -> Response {
    Json(shared.agent.health()).into_response()
}

async fn endpoints(State(shared): State<Shared>) -> Response {
    Json(shared.agent.endpoints()).into_response()
}

async fn identities(State(shared): State<Shared>) -> Response {
    Json(shared.agent.identities()).into_response()
}

async fn endpoint(
    State(shared): State<Shared>,
    Path((container, ifname)): Path<(String, String)>,
) -> Response {
    match shared.agent.endpoint(&container, &ifname) {
        Some(e) => Json(e).into_response(),
        None => AgentError::NotFound(format!("no endpoint {container}/{ifname}")).into_response(),
    }
}

async fn create(State(shared): State<Shared>, bytes: Bytes) -> Response {
    let request: EndpointRequest = match body(&bytes) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let agent = shared.agent.clone();
    let created = tokio::task::spawn_blocking(move || agent.create(request)).await;
    match created {
        Ok(Ok(endpoint)) => {
            if let (Some(runtime), EndpointState::WaitingForLabels) = (&shared.runtime, endpoint.state) {
                // Asked beside the ADD, never inside it (see runtime.rs).
                tokio::spawn(runtime.clone().resolve(shared.agent.clone(), endpoint.clone()));
            }
            Json(endpoint).into_response()
        }
        Ok(Err(e)) => e.into_response(),
        Err(e) => AgentError::Internal(format!("the request's worker failed: {e}")).into_response(),
    }
}

async fn delete(State(shared): State<Shared>, Path((container, ifname)): Path<(String, String)>) -> Response {
    let agent = shared.agent;
    blocking(move || {
        agent
            .delete(&container, &ifname)
            .map(|existed| Deleted { existed })
    })
    .await
}

async fn gc(State(shared): State<Shared>, bytes: Bytes) -> Response {
    let request: GcRequest = match body(&bytes) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let agent = shared.agent;
    blocking(move || {
        agent
            .gc(&request.network, &request.valid)
            .map(|removed| GcReply { removed })
    })
    .await
}

async fn policies(State(shared): State<Shared>) -> Response {
    let agent = shared.agent;
    blocking(move || Ok(agent.policies())).await
}

/// The body is the YAML text itself.
async fn apply_policies(State(shared): State<Shared>, bytes: Bytes) -> Response {
    let text = match String::from_utf8(bytes.to_vec()) {
        Ok(t) => t,
        Err(e) => {
            return AgentError::BadRequest(format!("the policy text is not UTF-8: {e}")).into_response()
        }
    };
    let agent = shared.agent;
    blocking(move || agent.apply_policies(&text)).await
}

async fn delete_policies(State(shared): State<Shared>, bytes: Bytes) -> Response {
    let deletion: PolicyDeletion = match body(&bytes) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let agent = shared.agent;
    blocking(move || agent.delete_policies(&deletion)).await
}

async fn selector_rule(State(shared): State<Shared>, bytes: Bytes, allow: bool) -> Response {
    let rule: SelectorRule = match body(&bytes) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let agent = shared.agent;
    blocking(move || agent.selector_rule(&rule, allow)).await
}
