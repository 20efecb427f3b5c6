//! An in-process stand-in for the push endpoint of Grafana Loki.
//!
//! [`TestLoki`] listens on 127.0.0.1, decodes each push the way Loki's distributor does (a raw
//! snappy block holding a protobuf `PushRequest`), validates it with Loki's rules plus the
//! promises fwd2loki makes on top of them, and records what it accepted so that tests can assert
//! on exactly what fwd2loki delivered. It can also misbehave on request (error statuses,
//! `Retry-After`, slow answers, going down and coming back) to exercise fwd2loki's delivery logic.
//! It can serve HTTPS too, with or without asking for a client certificate.
//!
//! Where this receiver is deliberately stricter than Loki, the item says so. It never applies
//! Loki's time-based limits (too old, too far in the future), because those depend on the clock
//! and on per-tenant configuration rather than on what fwd2loki sends.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The only path Loki's push API is served on.
pub(crate) const PUSH_PATH: &str = "/loki/api/v1/push";

/// Loki's default `distributor.max-recv-msg-size`: the largest body, compressed or not.
const MAX_BODY_BYTES: usize = 100 << 20;
/// Loki's default `max_line_size` (256KB), beyond which an entry is rejected.
const MAX_LINE_BYTES: usize = 256 << 10;
/// Loki's default `max_label_names_per_series`.
const MAX_LABEL_NAMES: usize = 15;
/// Loki's default `max_label_name_length`.
const MAX_LABEL_NAME_BYTES: usize = 1024;
/// Loki's default `max_label_value_length`.
const MAX_LABEL_VALUE_BYTES: usize = 2048;
/// Loki's default `max_structured_metadata_entries_count`.
const MAX_STRUCTURED_METADATA_ENTRIES: usize = 128;
/// Loki's default `max_structured_metadata_size` (64KB), counting names and values.
const MAX_STRUCTURED_METADATA_BYTES: usize = 64 << 10;

/// The first seconds value a protobuf `Timestamp` may hold (0001-01-01T00:00:00Z).
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
/// The first seconds value a protobuf `Timestamp` may no longer hold (10000-01-01T00:00:00Z).
const END_TIMESTAMP_SECONDS: i64 = 253_402_300_800;
const NANOS_PER_SECOND: i32 = 1_000_000_000;

/// The stream identifier chunk that starts every body in snappy's framed (stream) format.
const SNAPPY_FRAMED_MAGIC: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// How long [`TestLoki::shutdown`] waits for the server to finish its in-flight requests.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Loki's own answer to a push without streams.
const MISSING_STREAMS_MESSAGE: &str = "error at least one valid stream is required for ingestion";
/// Loki's own answer to a stream whose labels are all absent.
const MISSING_LABELS_MESSAGE: &str = "error at least one label pair is required per stream";

/// The protobuf messages of Loki's `pkg/push/push.proto`, declared by hand so that no build
/// script is needed. Field numbers and wire types match the upstream file.
pub(crate) mod proto {
    /// One push: the streams to append to.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct PushRequest {
        /// The streams, each with its own label set and entries.
        #[prost(message, repeated, tag = "1")]
        pub(crate) streams: Vec<StreamAdapter>,
        /// The format of the original payload; Loki fills it in itself for non-native formats.
        #[prost(string, tag = "2")]
        pub(crate) format: String,
    }

    /// One stream: a label set written as a selector, and its entries.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct StreamAdapter {
        /// The label set written as a selector, such as `{job="x", host="y"}`.
        #[prost(string, tag = "1")]
        pub(crate) labels: String,
        /// The log entries of the stream.
        #[prost(message, repeated, tag = "2")]
        pub(crate) entries: Vec<EntryAdapter>,
        /// A hash Loki computes itself; clients leave it zero.
        #[prost(uint64, tag = "3")]
        pub(crate) hash: u64,
    }

    /// One log entry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct EntryAdapter {
        /// When the entry was logged.
        #[prost(message, optional, tag = "1")]
        pub(crate) timestamp: Option<Timestamp>,
        /// The log line itself.
        #[prost(string, tag = "2")]
        pub(crate) line: String,
        /// Per-entry key/value pairs stored beside the line rather than in the stream labels.
        #[prost(message, repeated, tag = "3")]
        pub(crate) structured_metadata: Vec<LabelPairAdapter>,
        /// Labels Loki extracts at query time; clients leave it empty.
        #[prost(message, repeated, tag = "4")]
        pub(crate) parsed: Vec<LabelPairAdapter>,
    }

    /// One name/value pair of structured metadata.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct LabelPairAdapter {
        /// The name, following the rules of label names.
        #[prost(string, tag = "1")]
        pub(crate) name: String,
        /// The value, which may be any text.
        #[prost(string, tag = "2")]
        pub(crate) value: String,
    }

    /// The wire form of `google.protobuf.Timestamp`.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub(crate) struct Timestamp {
        /// Whole seconds since the Unix epoch.
        #[prost(int64, tag = "1")]
        pub(crate) seconds: i64,
        /// The fraction of the second, which must lie in `0..1_000_000_000`.
        #[prost(int32, tag = "2")]
        pub(crate) nanos: i32,
    }
}

/// Encodes a push exactly as Loki expects the body: protobuf, then one raw snappy block.
pub(crate) fn encode_push_body(request: &proto::PushRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy compresses any buffer that fits in memory")
}

/// A scripted misbehaviour, applied to one push request before it is handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Answer this HTTP status with the body `injected <status>`; the push is not recorded.
    Status(u16),
    /// Like [`Fault::Status`], and also send `Retry-After` with this many seconds.
    StatusRetryAfter(u16, u64),
    /// Wait this long, then handle the push normally: a slow Loki, or one slower than the
    /// client's timeout. A shutdown cuts the wait short and answers 503.
    Delay(Duration),
    /// Panic inside the handler. It exists to prove that such panics are reported, not lost.
    Panic,
}

impl Fault {
    /// Checks the fault when it is scripted, so that a typo fails the test at once instead of
    /// panicking inside the server later.
    fn assert_valid(&self) {
        if let Fault::Status(code) | Fault::StatusRetryAfter(code, _) = self {
            status_code(*code);
        }
    }
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or_else(|_| panic!("{code} is not a valid HTTP status"))
}

/// One push the receiver accepted, with the request headers fwd2loki is expected to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReceivedPush {
    /// The `Content-Type` header as sent.
    pub(crate) content_type: String,
    /// The `User-Agent` header, or an empty string when it was missing.
    pub(crate) user_agent: String,
    /// The `X-Scope-OrgID` header, which names the Loki tenant.
    pub(crate) tenant: Option<String>,
    /// The `Authorization` header.
    pub(crate) authorization: Option<String>,
    /// The decoded streams, in the order of the request.
    pub(crate) streams: Vec<ReceivedStream>,
}

/// One decoded stream of an accepted push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReceivedStream {
    /// The label selector exactly as sent.
    pub(crate) label_string: String,
    /// The parsed labels. Like Loki, labels with an empty value are left out.
    pub(crate) labels: BTreeMap<String, String>,
    /// Whether the label names were written in ascending order, as fwd2loki writes them.
    pub(crate) labels_sorted: bool,
    /// The entries, in the order of the request.
    pub(crate) entries: Vec<ReceivedEntry>,
}

/// One accepted log entry, together with the stream and tenant it was pushed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReceivedEntry {
    /// The labels of the stream the entry belongs to.
    pub(crate) labels: BTreeMap<String, String>,
    /// The tenant of the push that carried the entry.
    pub(crate) tenant: Option<String>,
    /// The timestamp in nanoseconds since the Unix epoch.
    pub(crate) timestamp_ns: i128,
    /// The log line.
    pub(crate) line: String,
    /// The structured metadata pairs, in the order sent.
    pub(crate) structured_metadata: Vec<(String, String)>,
}

/// A test Loki: an HTTP server on 127.0.0.1 that validates and records pushes.
///
/// The server stops when the value is dropped. If the handler ever panicked, dropping the value
/// panics too (unless the test is already failing), so such a bug cannot go unnoticed.
pub(crate) struct TestLoki {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<RunningServer>>,
    /// Set when the receiver serves HTTPS.
    tls: Option<TlsAcceptor>,
}

impl TestLoki {
    /// Starts a receiver on a free port of 127.0.0.1.
    pub(crate) async fn start() -> TestLoki {
        Self::start_with(None).await
    }

    /// Starts a receiver that serves HTTPS with `acceptor`'s certificate (and asks for a client
    /// certificate if the acceptor does).
    pub(crate) async fn start_tls(acceptor: TlsAcceptor) -> TestLoki {
        Self::start_with(Some(acceptor)).await
    }

    async fn start_with(tls: Option<TlsAcceptor>) -> TestLoki {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the test Loki to a free port of 127.0.0.1");
        let addr = listener.local_addr().expect("the test Loki listener has an address");
        let shared = Arc::new(Shared::default());
        let server = RunningServer::spawn(listener, Arc::clone(&shared), tls.clone());
        TestLoki { addr, shared, server: Mutex::new(Some(server)), tls }
    }

    /// The address the receiver listens on; it stays the same across [`TestLoki::restart`].
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The full push URL, such as `http://127.0.0.1:PORT/loki/api/v1/push` (`https` when the
    /// receiver serves TLS).
    pub(crate) fn push_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{PUSH_PATH}", self.addr)
    }

    /// Queues faults; each incoming push consumes the next one before anything else happens.
    pub(crate) fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        let faults: Vec<Fault> = faults.into_iter().collect();
        for fault in &faults {
            fault.assert_valid();
        }
        self.shared.update(|state| state.fault_queue.extend(faults));
    }

    /// Sets the fault applied to every push once the queue is empty, or clears it with `None`.
    pub(crate) fn set_default_fault(&self, fault: Option<Fault>) {
        if let Some(fault) = &fault {
            fault.assert_valid();
        }
        self.shared.update(|state| state.default_fault = fault);
    }

    /// The accepted pushes, in arrival order.
    pub(crate) fn pushes(&self) -> Vec<ReceivedPush> {
        self.shared.lock().pushes.clone()
    }

    /// Every accepted entry, flattened in arrival order (push, then stream, then entry).
    pub(crate) fn entries(&self) -> Vec<ReceivedEntry> {
        self.shared.lock().entries()
    }

    /// The reasons of every rejected request, in arrival order.
    pub(crate) fn rejections(&self) -> Vec<String> {
        self.shared.lock().rejections.clone()
    }

    /// The number of requests received: accepted, rejected and answered by a fault alike.
    pub(crate) fn requests(&self) -> usize {
        self.shared.lock().requests
    }

    /// The number of faults applied so far, delays included.
    pub(crate) fn faults_applied(&self) -> usize {
        self.shared.lock().faults_applied
    }

    /// The messages of the handler panics seen so far; any entry here is a bug.
    pub(crate) fn handler_panics(&self) -> Vec<String> {
        self.shared.lock().handler_panics.clone()
    }

    /// Waits until at least `count` entries have been accepted and returns all of them.
    ///
    /// Panics at the timeout with what was received so far, and at once if the handler panicked.
    pub(crate) async fn wait_for_entries(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Vec<ReceivedEntry> {
        let what = format!("{count} accepted entries");
        self.wait_until(timeout, &what, |state| {
            let entries = state.entries();
            (entries.len() >= count).then_some(entries)
        })
        .await
    }

    /// Waits until at least `count` requests have arrived, whatever their outcome, and returns
    /// the number seen. Panics like [`TestLoki::wait_for_entries`].
    /// Waits until at least `count` TLS handshakes have failed, and returns how many did.
    pub(crate) async fn wait_for_tls_failures(&self, count: usize, timeout: Duration) -> usize {
        let what = format!("{count} failed TLS handshakes");
        self.wait_until(timeout, &what, |state| {
            (state.tls_failures.len() >= count).then_some(state.tls_failures.len())
        })
        .await
    }

    /// Why TLS handshakes failed, in order.
    pub(crate) fn tls_failures(&self) -> Vec<String> {
        self.shared.lock().tls_failures.clone()
    }

    pub(crate) async fn wait_for_requests(&self, count: usize, timeout: Duration) -> usize {
        let what = format!("{count} requests");
        self.wait_until(timeout, &what, |state| (state.requests >= count).then_some(state.requests))
            .await
    }

    /// Stops listening, so that new connections are refused, once in-flight requests are done.
    ///
    /// Recorded state and scripted faults are kept for [`TestLoki::restart`].
    pub(crate) async fn shutdown(&self) {
        let server = self.server_slot().take().expect("the test Loki is already shut down");
        server.stop().await;
    }

    /// Listens again on the same address after [`TestLoki::shutdown`], keeping recorded state.
    pub(crate) async fn restart(&self) {
        assert!(self.server_slot().is_none(), "the test Loki is already running");
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|error| panic!("rebind the test Loki to {}: {error}", self.addr));
        let server = RunningServer::spawn(listener, Arc::clone(&self.shared), self.tls.clone());
        *self.server_slot() = Some(server);
    }

    fn server_slot(&self) -> MutexGuard<'_, Option<RunningServer>> {
        self.server.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Polls `ready` after every change of the recorded state until it yields a value.
    async fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut ready: impl FnMut(&Recorded) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            // Registering for the wake-up before looking at the state means a change that
            // happens in between still wakes us.
            let mut changed = pin!(self.shared.changed.notified());
            changed.as_mut().enable();
            {
                let state = self.shared.lock();
                assert!(
                    state.handler_panics.is_empty(),
                    "the test Loki handler panicked while waiting for {what}: {}",
                    state.summary()
                );
                if let Some(value) = ready(&state) {
                    return value;
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let summary = self.shared.lock().summary();
                panic!("timed out after {timeout:?} waiting for {what}: {summary}");
            }
        }
    }
}

impl Drop for TestLoki {
    fn drop(&mut self) {
        // Dropping the running server closes its stop channel, which shuts it down.
        drop(self.server_slot().take());
        let panics = self.handler_panics();
        if !panics.is_empty() && !std::thread::panicking() {
            panic!("the test Loki handler panicked: {panics:?}");
        }
    }
}

/// State shared between the test and the server tasks.
#[derive(Default)]
struct Shared {
    state: Mutex<Recorded>,
    /// Woken after every change of `state`, for the `wait_*` methods.
    changed: Notify,
}

impl Shared {
    /// Locks the state. A panic elsewhere must not hide what was recorded, so poisoning is
    /// ignored.
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the state and wakes the waiters.
    fn update<T>(&self, change: impl FnOnce(&mut Recorded) -> T) -> T {
        let result = change(&mut self.lock());
        self.changed.notify_waiters();
        result
    }

    /// Takes the fault for the current push: the next queued one, else the default.
    fn next_fault(&self) -> Option<Fault> {
        self.update(|state| {
            let fault = state.fault_queue.pop_front().or_else(|| state.default_fault.clone());
            state.faults_applied += usize::from(fault.is_some());
            fault
        })
    }

    /// Records a rejection and builds the matching answer.
    fn reject(&self, rejection: Rejection) -> Response {
        let response = text_response(rejection.status, &rejection.reason);
        self.update(|state| state.rejections.push(rejection.reason));
        response
    }
}

/// Everything the receiver has seen, plus the scripted faults.
#[derive(Default)]
struct Recorded {
    pushes: Vec<ReceivedPush>,
    rejections: Vec<String>,
    handler_panics: Vec<String>,
    requests: usize,
    /// Why each failed TLS handshake failed.
    tls_failures: Vec<String>,
    faults_applied: usize,
    fault_queue: VecDeque<Fault>,
    default_fault: Option<Fault>,
}

impl Recorded {
    fn entries(&self) -> Vec<ReceivedEntry> {
        let streams = self.pushes.iter().flat_map(|push| &push.streams);
        streams.flat_map(|stream| stream.entries.iter().cloned()).collect()
    }

    /// A one-line account of what was received, for failure messages.
    fn summary(&self) -> String {
        format!(
            "{} accepted entries in {} pushes, {} requests, {} faults applied, \
             rejections: {:?}, handler panics: {:?}",
            self.entries().len(),
            self.pushes.len(),
            self.requests,
            self.faults_applied,
            self.rejections,
            self.handler_panics
        )
    }
}

/// One run of the HTTP server, between a start (or restart) and a shutdown.
struct RunningServer {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningServer {
    fn spawn(
        listener: TcpListener,
        shared: Arc<Shared>,
        tls: Option<TlsAcceptor>,
    ) -> RunningServer {
        let (stop, stopping) = watch::channel(false);
        let router = Router::new()
            .fallback(handle_request)
            .with_state(ServerContext { shared: Arc::clone(&shared), stopping: stopping.clone() });
        let task = tokio::spawn(async move {
            let served = match tls {
                None => {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stop_requested(stopping))
                        .await
                }
                Some(acceptor) => {
                    axum::serve(TlsListener { tcp: listener, acceptor, shared }, router)
                        .with_graceful_shutdown(stop_requested(stopping))
                        .await
                }
            };
            served.expect("the test Loki server fails only if its listener does");
        });
        RunningServer { stop, task }
    }

    /// Asks the server to stop and waits until it has released the port.
    async fn stop(self) {
        self.stop.send_replace(true);
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("the test Loki server task failed: {error}"),
            Err(_) => panic!("the test Loki did not stop within {SHUTDOWN_TIMEOUT:?}"),
        }
    }
}

/// A listener that hands axum only connections whose TLS handshake succeeded, and records why
/// the others failed.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Accepting fails only when the process is out of descriptors or the like; the
            // next attempt may succeed, as with axum's own listener.
            let Ok((tcp, address)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, address),
                Err(error) => {
                    self.shared.update(|state| state.tls_failures.push(error.to_string()))
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Completes once a stop is requested, or once the requester is gone.
async fn stop_requested(mut stopping: watch::Receiver<bool>) {
    // An error means the sender was dropped with the `TestLoki`, which is a stop as well.
    _ = stopping.wait_for(|stop| *stop).await;
}

/// What each request handler gets from the server.
#[derive(Clone)]
struct ServerContext {
    shared: Arc<Shared>,
    stopping: watch::Receiver<bool>,
}

/// Answers every request, on any path, so that each one is counted.
async fn handle_request(State(server): State<ServerContext>, request: Request) -> Response {
    server.shared.update(|state| state.requests += 1);
    let shared = Arc::clone(&server.shared);
    // The work runs in a task of its own so that a panic there is caught, recorded and answered
    // with 500 instead of silently dropping the connection.
    match tokio::spawn(serve_request(server, request)).await {
        Ok(response) => response,
        Err(error) => {
            let message = panic_message(error);
            let response = text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("test Loki handler panicked: {message}"),
            );
            shared.update(|state| state.handler_panics.push(message));
            response
        }
    }
}

async fn serve_request(server: ServerContext, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(rejection) = check_route(&parts.method, parts.uri.path()) {
        return server.shared.reject(rejection);
    }
    // The body is read even when a fault answers, as a real server would, so that the client
    // never sees its upload cut off.
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(error) => {
            return server.shared.reject(Rejection::bad_request(format!("read body: {error}")));
        }
    };
    if let Some(fault) = server.shared.next_fault() {
        if let Some(response) = apply_fault(fault, server.stopping.clone()).await {
            return response;
        }
    }
    match accept_push(&parts.headers, &body) {
        Ok(push) => {
            server.shared.update(|state| state.pushes.push(push));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(rejection) => server.shared.reject(rejection),
    }
}

/// Answers a fault, or returns `None` when the push should then be handled normally.
async fn apply_fault(fault: Fault, stopping: watch::Receiver<bool>) -> Option<Response> {
    match fault {
        Fault::Status(code) => Some(fault_response(status_code(code), None)),
        Fault::StatusRetryAfter(code, seconds) => {
            Some(fault_response(status_code(code), Some(seconds)))
        }
        Fault::Delay(delay) => {
            tokio::select! {
                () = tokio::time::sleep(delay) => None,
                () = stop_requested(stopping) => Some(text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "test Loki is shutting down",
                )),
            }
        }
        Fault::Panic => panic!("injected panic"),
    }
}

fn fault_response(status: StatusCode, retry_after_seconds: Option<u64>) -> Response {
    let mut response = text_response(status, &format!("injected {}", status.as_u16()));
    if let Some(seconds) = retry_after_seconds {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Answers like Go's `http.Error`, which Loki uses: plain text ending in a newline.
fn text_response(status: StatusCode, message: &str) -> Response {
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    (status, content_type, format!("{message}\n")).into_response()
}

fn panic_message(error: JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => payload
                .downcast_ref::<&str>()
                .map_or_else(|| "non-text panic payload".to_owned(), |text| (*text).to_owned()),
        },
        Err(error) => format!("handler task did not finish: {error}"),
    }
}

/// Why a request was refused, and with which status.
#[derive(Debug)]
struct Rejection {
    status: StatusCode,
    reason: String,
}

impl Rejection {
    fn bad_request(reason: String) -> Rejection {
        Rejection { status: StatusCode::BAD_REQUEST, reason }
    }
}

fn check_route(method: &Method, path: &str) -> Result<(), Rejection> {
    if path != PUSH_PATH {
        let reason = format!("404 page not found: {method} {path}");
        return Err(Rejection { status: StatusCode::NOT_FOUND, reason });
    }
    if method != Method::POST {
        let reason = format!("method {method} not allowed on {path}");
        return Err(Rejection { status: StatusCode::METHOD_NOT_ALLOWED, reason });
    }
    Ok(())
}

/// Decodes and validates one push, all or nothing.
///
/// Loki ingests the valid streams of a partly invalid push and still answers 400; this receiver
/// records nothing from such a push, since any rejection already fails a fwd2loki test.
fn accept_push(headers: &HeaderMap, body: &Bytes) -> Result<ReceivedPush, Rejection> {
    let content_type = check_content_type(headers)?;
    check_content_encoding(headers)?;
    let request = decode_push_request(body)?;
    let tenant = header_text(headers, "x-scope-orgid");
    let streams = validate_push_request(request, tenant.as_ref())?;
    Ok(ReceivedPush {
        content_type,
        user_agent: header_text(headers, header::USER_AGENT.as_str()).unwrap_or_default(),
        tenant,
        authorization: header_text(headers, header::AUTHORIZATION.as_str()),
        streams,
    })
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?;
    Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// Requires the protobuf content type. Stricter than Loki, which also takes JSON and treats a
/// missing or unknown type as protobuf: fwd2loki always sends protobuf and must say so.
fn check_content_type(headers: &HeaderMap) -> Result<String, Rejection> {
    let content_type = header_text(headers, header::CONTENT_TYPE.as_str()).unwrap_or_default();
    // Parameters such as `; charset=...` are allowed, as Go's `mime.ParseMediaType` allows them.
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/x-protobuf") {
        Ok(content_type)
    } else {
        let reason =
            format!("unsupported Content-Type {content_type:?}: expected application/x-protobuf");
        Err(Rejection::bad_request(reason))
    }
}

/// Refuses any `Content-Encoding`. Loki would also take gzip or deflate, but fwd2loki's body is
/// already compressed with snappy, so any encoding on top is a mistake.
fn check_content_encoding(headers: &HeaderMap) -> Result<(), Rejection> {
    match header_text(headers, header::CONTENT_ENCODING.as_str()) {
        None => Ok(()),
        Some(encoding) => Err(Rejection::bad_request(format!(
            "Content-Encoding {encoding:?} not supported: the body must be a raw snappy block"
        ))),
    }
}

fn decode_push_request(body: &[u8]) -> Result<proto::PushRequest, Rejection> {
    // The framed format fails raw decoding anyway; naming it makes the mistake obvious.
    if body.starts_with(SNAPPY_FRAMED_MAGIC) {
        return Err(Rejection::bad_request(
            "snappy: body uses the framed (stream) format, expected one raw block".to_owned(),
        ));
    }
    let decoded_len = snap::raw::decompress_len(body)
        .map_err(|error| Rejection::bad_request(format!("snappy: {error}")))?;
    if decoded_len > MAX_BODY_BYTES {
        return Err(Rejection::bad_request(format!(
            "request body too large: {decoded_len} bytes, limit: {MAX_BODY_BYTES} bytes"
        )));
    }
    let decoded = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|error| Rejection::bad_request(format!("snappy: {error}")))?;
    proto::PushRequest::decode(decoded.as_slice())
        .map_err(|error| Rejection::bad_request(format!("protobuf PushRequest: {error}")))
}

fn validate_push_request(
    request: proto::PushRequest,
    tenant: Option<&String>,
) -> Result<Vec<ReceivedStream>, Rejection> {
    if request.streams.is_empty() {
        let reason = MISSING_STREAMS_MESSAGE.to_owned();
        return Err(Rejection { status: StatusCode::UNPROCESSABLE_ENTITY, reason });
    }
    request.streams.into_iter().map(|stream| validate_stream(stream, tenant)).collect()
}

fn validate_stream(
    stream: proto::StreamAdapter,
    tenant: Option<&String>,
) -> Result<ReceivedStream, Rejection> {
    let label_string = stream.labels;
    let (labels, labels_sorted) =
        validate_label_string(&label_string).map_err(Rejection::bad_request)?;
    let entries = stream
        .entries
        .into_iter()
        .map(|entry| validate_entry(entry, &label_string, &labels, tenant))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Rejection::bad_request)?;
    check_entry_order(&entries, &label_string).map_err(Rejection::bad_request)?;
    Ok(ReceivedStream { label_string, labels, labels_sorted, entries })
}

/// Parses and checks a stream's labels as Loki does, returning them with whether the names were
/// written in ascending order.
fn validate_label_string(label_string: &str) -> Result<(BTreeMap<String, String>, bool), String> {
    let pairs = parse_label_string(label_string)
        .map_err(|error| format!("Error parsing labels '{label_string}' with error: {error}"))?;
    let sorted = pairs.windows(2).all(|pair| pair[0].0 < pair[1].0);
    let mut seen = BTreeSet::new();
    for (name, value) in &pairs {
        check_label(label_string, name, value)?;
        if !seen.insert(name.as_str()) {
            return Err(format!("stream '{label_string}' has duplicate label name: '{name}'"));
        }
    }
    // Like Prometheus, Loki treats a label with an empty value as absent and drops it.
    let labels: BTreeMap<String, String> =
        pairs.into_iter().filter(|(_, value)| !value.is_empty()).collect();
    if labels.is_empty() {
        return Err(MISSING_LABELS_MESSAGE.to_owned());
    }
    if labels.len() > MAX_LABEL_NAMES {
        return Err(format!(
            "entry for stream '{label_string}' has {} label names; limit {MAX_LABEL_NAMES}",
            labels.len()
        ));
    }
    Ok((labels, sorted))
}

fn check_label(label_string: &str, name: &str, value: &str) -> Result<(), String> {
    if name.starts_with("__") {
        return Err(format!("stream '{label_string}' has reserved label name: '{name}'"));
    }
    if name.len() > MAX_LABEL_NAME_BYTES {
        return Err(format!("stream '{label_string}' has label name too long: '{name}'"));
    }
    if value.len() > MAX_LABEL_VALUE_BYTES {
        return Err(format!("stream '{label_string}' has label value too long: '{value}'"));
    }
    Ok(())
}

fn validate_entry(
    entry: proto::EntryAdapter,
    label_string: &str,
    labels: &BTreeMap<String, String>,
    tenant: Option<&String>,
) -> Result<ReceivedEntry, String> {
    let timestamp_ns = timestamp_nanos(entry.timestamp, label_string)?;
    if entry.line.len() > MAX_LINE_BYTES {
        return Err(format!(
            "Max entry size '{MAX_LINE_BYTES}' bytes exceeded for stream '{label_string}' \
             while adding an entry with length '{}' bytes",
            entry.line.len()
        ));
    }
    let structured_metadata =
        validate_structured_metadata(entry.structured_metadata, label_string)?;
    Ok(ReceivedEntry {
        labels: labels.clone(),
        tenant: tenant.cloned(),
        timestamp_ns,
        line: entry.line,
        structured_metadata,
    })
}

/// Converts a timestamp under the rules protobuf sets for `google.protobuf.Timestamp`, which
/// Loki's decoder enforces.
fn timestamp_nanos(
    timestamp: Option<proto::Timestamp>,
    label_string: &str,
) -> Result<i128, String> {
    // Loki would read a missing timestamp as year 1 and reject it as too old.
    let Some(proto::Timestamp { seconds, nanos }) = timestamp else {
        return Err(format!("entry for stream '{label_string}' has no timestamp"));
    };
    if !(0..NANOS_PER_SECOND).contains(&nanos) {
        return Err(format!(
            "entry for stream '{label_string}' has timestamp nanos {nanos} not in range [0, 1e9)"
        ));
    }
    if !(MIN_TIMESTAMP_SECONDS..END_TIMESTAMP_SECONDS).contains(&seconds) {
        return Err(format!(
            "entry for stream '{label_string}' has timestamp seconds {seconds} outside years \
             0001 to 9999"
        ));
    }
    Ok(i128::from(seconds) * i128::from(NANOS_PER_SECOND) + i128::from(nanos))
}

fn validate_structured_metadata(
    pairs: Vec<proto::LabelPairAdapter>,
    label_string: &str,
) -> Result<Vec<(String, String)>, String> {
    if let Some(pair) = pairs.iter().find(|pair| !is_valid_label_name(&pair.name)) {
        return Err(format!(
            "stream '{label_string}' has invalid structured metadata name: '{}'",
            pair.name
        ));
    }
    if pairs.len() > MAX_STRUCTURED_METADATA_ENTRIES {
        return Err(format!(
            "stream '{label_string}' has too many structured metadata labels: '{}', limit: \
             '{MAX_STRUCTURED_METADATA_ENTRIES}'",
            pairs.len()
        ));
    }
    let size: usize = pairs.iter().map(|pair| pair.name.len() + pair.value.len()).sum();
    if size > MAX_STRUCTURED_METADATA_BYTES {
        return Err(format!(
            "stream '{label_string}' has structured metadata too large: '{size}' bytes, limit: \
             '{MAX_STRUCTURED_METADATA_BYTES}' bytes"
        ));
    }
    Ok(pairs.into_iter().map(|pair| (pair.name, pair.value)).collect())
}

/// Enforces fwd2loki's promise that the entries of one stream in one push never go back in
/// time. Loki itself accepts them in any order within its out-of-order window.
fn check_entry_order(entries: &[ReceivedEntry], label_string: &str) -> Result<(), String> {
    match entries.windows(2).find(|pair| pair[1].timestamp_ns < pair[0].timestamp_ns) {
        None => Ok(()),
        Some(pair) => Err(format!(
            "entry out of order for stream '{label_string}': timestamp {} ns follows {} ns",
            pair[1].timestamp_ns, pair[0].timestamp_ns
        )),
    }
}

/// Whether `name` is a valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|rest| rest.is_ascii_alphanumeric() || rest == '_')
}

/// Parses a stream selector such as `{job="x", host="y"}` as PromQL's `ParseMetric` does,
/// returning the pairs in written order.
///
/// Accepted, as in PromQL: whitespace between tokens, a trailing comma, `{}`, and values quoted
/// with `"` or `'` (Go escapes) or with backquotes (raw). A metric name before the brace is
/// refused, since Loki streams have none.
pub(crate) fn parse_label_string(input: &str) -> Result<Vec<(String, String)>, String> {
    SelectorParser { input, pos: 0 }.selector()
}

/// A cursor over a selector; `pos` is a byte offset into `input`, always on a char boundary.
struct SelectorParser<'a> {
    input: &'a str,
    pos: usize,
}

impl SelectorParser<'_> {
    fn selector(mut self) -> Result<Vec<(String, String)>, String> {
        self.skip_whitespace();
        self.expect('{')?;
        let mut pairs = Vec::new();
        loop {
            self.skip_whitespace();
            if self.eat('}') {
                break;
            }
            pairs.push(self.pair()?);
            self.skip_whitespace();
            if self.eat('}') {
                break;
            }
            self.expect(',')?;
        }
        self.skip_whitespace();
        match self.peek() {
            None => Ok(pairs),
            Some(found) => Err(format!("unexpected {found:?} after '}}' at offset {}", self.pos)),
        }
    }

    fn pair(&mut self) -> Result<(String, String), String> {
        let name = self.label_name()?;
        self.skip_whitespace();
        self.expect('=')?;
        self.skip_whitespace();
        let value = self.quoted_value()?;
        Ok((name, value))
    }

    /// Reads everything up to the next delimiter, so that a bad name is reported whole.
    fn label_name(&mut self) -> Result<String, String> {
        let start = self.pos;
        while self.peek().is_some_and(|c| !is_whitespace(c) && !"{}=!~,\"'`".contains(c)) {
            self.bump();
        }
        let name = &self.input[start..self.pos];
        if name.is_empty() {
            return Err(self.unexpected("a label name"));
        }
        if !is_valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        Ok(name.to_owned())
    }

    fn quoted_value(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(quote @ ('"' | '\'')) => {
                self.bump();
                self.escaped_string(quote)
            }
            Some('`') => {
                self.bump();
                self.raw_string()
            }
            _ => Err(self.unexpected("a quoted label value")),
        }
    }

    /// Reads a Go-style quoted string after its opening quote. Escapes are collected as bytes,
    /// because `\x` and octal escapes name bytes that may only form text together.
    fn escaped_string(&mut self, quote: char) -> Result<String, String> {
        let mut bytes = Vec::new();
        loop {
            match self.bump() {
                None | Some('\n') => return Err("unterminated quoted string".to_owned()),
                Some(c) if c == quote => break,
                Some('\\') => self.escape(quote, &mut bytes)?,
                Some(c) => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        String::from_utf8(bytes).map_err(|_| "label value is not valid UTF-8".to_owned())
    }

    fn escape(&mut self, quote: char, bytes: &mut Vec<u8>) -> Result<(), String> {
        let escaped = self.bump().ok_or("unterminated quoted string")?;
        let byte = match escaped {
            'a' => 0x07,
            'b' => 0x08,
            'f' => 0x0c,
            'n' => b'\n',
            'r' => b'\r',
            't' => b'\t',
            'v' => 0x0b,
            '\\' => b'\\',
            c if c == quote => c as u8,
            '0'..='7' => {
                let high = escaped.to_digit(8).expect("the pattern matched an octal digit");
                let value = high * 64 + self.digits(2, 8)?;
                u8::try_from(value).map_err(|_| format!("octal escape \\{value:o} above 255"))?
            }
            'x' => u8::try_from(self.digits(2, 16)?).expect("two hex digits fit in a byte"),
            'u' | 'U' => {
                let count = if escaped == 'u' { 4 } else { 8 };
                let code = self.digits(count, 16)?;
                let c = char::from_u32(code)
                    .ok_or_else(|| format!("escape \\{escaped}{code:x} is not a character"))?;
                bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                return Ok(());
            }
            other => return Err(format!("unknown escape sequence \\{other}")),
        };
        bytes.push(byte);
        Ok(())
    }

    /// Reads exactly `count` digits of `radix` and returns their value.
    fn digits(&mut self, count: usize, radix: u32) -> Result<u32, String> {
        let mut value = 0;
        for _ in 0..count {
            let c = self.bump().ok_or("unterminated escape sequence")?;
            let digit = c
                .to_digit(radix)
                .ok_or_else(|| format!("invalid digit {c:?} in escape sequence"))?;
            value = value * radix + digit;
        }
        Ok(value)
    }

    /// Reads a backquoted string after its opening quote: no escapes, newlines allowed.
    fn raw_string(&mut self) -> Result<String, String> {
        let start = self.pos;
        loop {
            match self.bump() {
                None => return Err("unterminated raw string".to_owned()),
                Some('`') => return Ok(self.input[start..self.pos - 1].to_owned()),
                Some(_) => {}
            }
        }
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, expected: char) -> bool {
        let found = self.peek() == Some(expected);
        if found {
            self.bump();
        }
        found
    }

    fn expect(&mut self, expected: char) -> Result<(), String> {
        if self.eat(expected) { Ok(()) } else { Err(self.unexpected(&format!("{expected:?}"))) }
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(is_whitespace) {
            self.bump();
        }
    }

    fn unexpected(&self, expected: &str) -> String {
        match self.peek() {
            Some(found) => format!("expected {expected} at offset {}, found {found:?}", self.pos),
            None => format!("expected {expected} at offset {}, found the end", self.pos),
        }
    }
}

/// The whitespace PromQL's lexer skips between tokens.
fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}
