//! A blocking client over the agent's unix socket: one HTTP/1.1 request
//! per call (hyper), on a current-thread runtime of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{
    ApiError, Deleted, Endpoint, EndpointRequest, GcReply, GcRequest, Health, Identity, PolicyChanges,
    PolicyDeletion, PolicySummary, SelectorRule,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket (no agent, or not yet).
    #[error("the ebpfcni agent at {socket} is unreachable: {source}")]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the ebpfcni agent at {socket} did not answer {what} within {after:?}")]
    Timeout {
        socket: PathBuf,
        what: String,
        after: Duration,
    },
    /// The connection ended before the reply was complete (the agent
    /// stopped or was killed): whether the request was carried out is not
    /// known.
    #[error("the ebpfcni agent at {socket} went away during {what}: {why}")]
    Interrupted {
        socket: PathBuf,
        what: String,
        why: String,
    },
    /// The agent answered with an error.
    #[error("the ebpfcni agent refused {what}: {}", .error.error)]
    Api {
        what: String,
        status: u16,
        error: ApiError,
    },
    #[error("the ebpfcni agent's reply to {what} is not understood: {why}")]
    Protocol { what: String, why: String },
}

impl ClientError {
    /// The agent answered 404 (an unknown endpoint, say).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }

    /// No answer came: the agent is not there, or went away, or was too
    /// slow. The request may or may not have been carried out.
    pub fn is_unanswered(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. } | ClientError::Timeout { .. } | ClientError::Interrupted { .. }
        )
    }
}

pub struct Client {
    socket: PathBuf,
    timeout: Duration,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    /// A client of the agent listening on `socket`. Nothing is connected
    /// until a call.
    pub fn new(socket: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .expect("a current-thread runtime builds");
        Self {
            socket: socket.to_path_buf(),
            timeout: Duration::from_secs(30),
            runtime,
        }
    }

    /// How long a call may take, connecting included (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether something listens on the socket (a connect, no request):
    /// the cheap check before work that needs the agent later.
    pub fn listening(&self) -> Result<(), ClientError> {
        std::os::unix::net::UnixStream::connect(&self.socket)
            .map(drop)
            .map_err(|source| ClientError::Unreachable {
                socket: self.socket.clone(),
                source,
            })
    }

    pub fn health(&self) -> Result<Health, ClientError> {
        self.call(Method::GET, "/v1/healthz", None::<&()>)
    }

    pub fn create_endpoint(&self, request: &EndpointRequest) -> Result<Endpoint, ClientError> {
        self.call(Method::POST, "/v1/endpoints", Some(request))
    }

    pub fn endpoint(&self, container_id: &str, ifname: &str) -> Result<Endpoint, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/endpoints/{}/{}", escape(container_id), escape(ifname)),
            None::<&()>,
        )
    }

    pub fn delete_endpoint(&self, container_id: &str, ifname: &str) -> Result<Deleted, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/endpoints/{}/{}", escape(container_id), escape(ifname)),
            None::<&()>,
        )
    }

    pub fn endpoints(&self) -> Result<Vec<Endpoint>, ClientError> {
        self.call(Method::GET, "/v1/endpoints", None::<&()>)
    }

    pub fn identities(&self) -> Result<Vec<Identity>, ClientError> {
        self.call(Method::GET, "/v1/identities", None::<&()>)
    }

    /// Every policy the agent enforces (`GET /v1/policies`).
    pub fn policies(&self) -> Result<Vec<PolicySummary>, ClientError> {
        self.call(Method::GET, "/v1/policies", None::<&()>)
    }

    /// Applies a YAML stream of policy documents (all or nothing); returns
    /// once the datapath enforces them.
    pub fn apply_policies(&self, yaml: &str) -> Result<PolicyChanges, ClientError> {
        self.call_bytes(Method::POST, "/v1/policies", yaml.as_bytes().to_vec())
    }

    pub fn delete_policies(&self, deletion: &PolicyDeletion) -> Result<PolicyChanges, ClientError> {
        self.call(Method::DELETE, "/v1/policies", Some(deletion))
    }

    /// Allows a selector rule (idempotent).
    pub fn allow_selector_rule(&self, rule: &SelectorRule) -> Result<PolicyChanges, ClientError> {
        self.call(Method::POST, "/v1/selector-rules", Some(rule))
    }

    /// Removes a selector rule (absent is fine).
    pub fn deny_selector_rule(&self, rule: &SelectorRule) -> Result<PolicyChanges, ClientError> {
        self.call(Method::DELETE, "/v1/selector-rules", Some(rule))
    }

    pub fn gc(&self, request: &GcRequest) -> Result<GcReply, ClientError> {
        self.call(Method::POST, "/v1/gc", Some(request))
    }

    fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(|b| serde_json::to_vec(b).expect("requests serialise"))
            .unwrap_or_default();
        self.call_bytes(method, path, body)
    }

    fn call_bytes<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let what = format!("{method} {path}");
        let exchange = self.exchange(method, path, body);
        let (status, bytes) = self
            .runtime
            .block_on(async { tokio::time::timeout(self.timeout, exchange).await })
            .map_err(|_| ClientError::Timeout {
                socket: self.socket.clone(),
                what: what.clone(),
                after: self.timeout,
            })??;
        if !status.is_success() {
            let error = serde_json::from_slice(&bytes).unwrap_or_else(|_| ApiError {
                kind: "internal".into(),
                error: format!("{status}: {}", String::from_utf8_lossy(&bytes).trim()),
            });
            return Err(ClientError::Api {
                what,
                status: status.as_u16(),
                error,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            what,
            why: e.to_string(),
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let response = send(&self.socket, method.clone(), path, body).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Interrupted {
                socket: self.socket.clone(),
                what: format!("{method} {path}"),
                why: e.to_string(),
            })?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// Sends one HTTP/1.1 request over the unix socket `socket` and returns the
/// response, its body still to be read (a stream of events, say). The
/// connection lives as long as the body is read.
pub async fn send(
    socket: &Path,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
    let unreachable = |source| ClientError::Unreachable {
        socket: socket.to_path_buf(),
        source,
    };
    let protocol = |why: String| ClientError::Protocol {
        what: format!("{method} {path}"),
        why,
    };
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(unreachable)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(std::io::Error::other(e)))?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method.clone())
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| protocol(e.to_string()))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Interrupted {
            socket: socket.to_path_buf(),
            what: format!("{method} {path}"),
            why: e.to_string(),
        })
}

/// A path segment: container ids and interface names are plain, but a
/// stray '/' or '%' must not change the path.
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
