//! The HTTP endpoints for operators: `/metrics` for Prometheus, `/health` for liveness and
//! `/ready` for readiness (listeners bound and pushers started, not shutting down).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::metrics::Metrics;

/// The content type of what prometheus-client writes: the OpenMetrics text format, which
/// Prometheus reads (and which, unlike its older text format, has an `info` type).
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoints report on.
#[derive(Debug, Clone)]
pub struct ServerState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

impl ServerState {
    /// State over `metrics`, not ready yet.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics, ready: Arc::new(AtomicBool::new(false)) }
    }

    /// Sets what `/ready` answers: 200 when true, 503 when false.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// A bound HTTP listener.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
}

impl Server {
    /// Binds `address`.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn bind(address: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let local = listener.local_addr()?;
        info!(listen = %local, "serving /metrics, /health and /ready");
        Ok(Self { listener })
    }

    /// The bound address.
    ///
    /// # Errors
    ///
    /// When the socket has no address, which does not happen for a bound TCP socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves the endpoints until `stop` is cancelled.
    pub async fn serve(self, state: ServerState, stop: CancellationToken) {
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .route("/ready", get(ready))
            .with_state(state);
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            error!(%error, "the HTTP server failed");
        }
    }
}

async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], state.metrics.encode())
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(state): State<ServerState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
