//! Sending batches to Loki's push API, and deciding what to do with its answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::config::LokiConfig;
use crate::log_limit::LogLimiter;
use crate::loki::auth::{Credentials, Redacted, Secret, WatchedFile};
use crate::loki::batch::Batch;
use crate::loki::encode::PushEncoder;
use crate::metrics::{Metrics, StatusLabels};
use crate::secrets::{SecretError, secret_from_env};

/// The User-Agent of every push, naming fwd2loki and its version.
pub const USER_AGENT: &str = concat!("fwd2loki/", env!("CARGO_PKG_VERSION"));

/// Longest part of Loki's answer kept for logs.
const MAX_REASON_BYTES: usize = 1024;

/// What Loki's answer to a push means for the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Loki stored the entries.
    Delivered,
    /// Loki could not take the entries now (429, 5xx) or could not be reached: try again.
    Retry {
        /// Status or transport error, for logs.
        reason: String,
        /// How long Loki asked us to wait, from `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Loki refused the entries for good (4xx other than 429): retrying cannot help.
    Rejected {
        /// The HTTP status.
        status: StatusCode,
        /// Loki's message.
        message: String,
    },
}

/// Sorts an HTTP status into an outcome: 2xx delivered, 429 and 5xx retried, the rest refused.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: String) -> PushOutcome {
    if status.is_success() {
        PushOutcome::Delivered
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        PushOutcome::Retry { reason: format!("{status}: {body}"), retry_after }
    } else {
        PushOutcome::Rejected { status, message: body }
    }
}

/// Exponential backoff with full jitter: the n-th wait is uniform in
/// `[0, min(max, min * 2^n)]`, and never shorter than `min`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first ceiling and the shortest wait.
    pub min: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry number `attempt` (0 for the first retry).
    pub fn wait(&self, attempt: u32) -> Duration {
        let ceiling = self.min.saturating_mul(1 << attempt.min(30)).min(self.max);
        let jittered = ceiling.mul_f64(fastrand::f64());
        jittered.max(self.min)
    }
}

/// A client of one Loki push endpoint. Clones share the HTTP connection pool and the
/// metrics; each has its own encoding buffers.
#[derive(Debug, Clone)]
pub struct LokiClient {
    http: reqwest::Client,
    url: reqwest::Url,
    tenant_id: Option<HeaderValue>,
    encoder: Arc<std::sync::Mutex<PushEncoder>>,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    log_limiter: Arc<LogLimiter>,
    credentials: Arc<Credentials>,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL or a header value is not usable.
    #[error("{key}: {message}")]
    Config {
        /// The config key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The HTTP client could not be built (e.g. no CA certificates on the system).
    #[error("cannot build the HTTP client: {}", error_chain(.0))]
    Http(#[from] reqwest::Error),
    /// A credentials or certificate file cannot be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// An error with its causes, which reqwest's own message leaves out.
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The HTTP client: User-Agent, timeout, and the TLS settings for Loki.
fn http_client(config: &LokiConfig) -> Result<reqwest::Client, ClientError> {
    let pem = |key: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| SecretError { key, path: path.to_owned(), source })
    };
    let invalid = |key: &'static str, error: reqwest::Error| ClientError::Config {
        key,
        message: error.to_string(),
    };
    let mut builder = reqwest::Client::builder().user_agent(USER_AGENT).timeout(config.timeout);
    if let Some(path) = &config.ca_file {
        let certificates = reqwest::Certificate::from_pem_bundle(&pem("loki.ca_file", path)?)
            .map_err(|error| invalid("loki.ca_file", error))?;
        builder = builder.tls_certs_merge(certificates);
    }
    if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
        let mut identity = pem("loki.cert_file", cert)?;
        identity.extend(pem("loki.key_file", key)?);
        let identity = reqwest::Identity::from_pem(&identity)
            .map_err(|error| invalid("loki.cert_file", error))?;
        builder = builder.identity(identity);
    }
    if config.insecure_skip_verify {
        warn!("loki.insecure_skip_verify is on: Loki's certificate is not checked");
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    Ok(builder.build()?)
}

/// The credentials from files or the environment; files are read now, so that a missing one
/// stops the start.
fn credentials(config: &LokiConfig) -> Result<Credentials, SecretError> {
    let secret = |key: &'static str, file: Option<&std::path::Path>, variable: &str| {
        if let Some(value) = secret_from_env(variable) {
            return Ok(Some(Secret::Fixed(Redacted::new(value))));
        }
        file.map(|path| WatchedFile::open(key, path).map(Secret::File)).transpose()
    };
    if let Some(user) = &config.basic_auth_user {
        let password = secret(
            "loki.basic_auth_password_file",
            config.basic_auth_password_file.as_deref(),
            "FWD2LOKI_LOKI_PASSWORD",
        )?
        .unwrap_or_else(|| Secret::Fixed(Redacted::new(String::new())));
        return Ok(Credentials::Basic { user: user.clone(), password });
    }
    let token = secret(
        "loki.bearer_token_file",
        config.bearer_token_file.as_deref(),
        "FWD2LOKI_LOKI_BEARER_TOKEN",
    )?;
    Ok(token.map_or(Credentials::None, Credentials::Bearer))
}

/// How often the same kind of push failure is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

impl LokiClient {
    /// A client for `config.url`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the URL is missing or invalid or the HTTP client cannot be built.
    pub fn new(config: &LokiConfig, metrics: Arc<Metrics>) -> Result<Self, ClientError> {
        let invalid = |key, message: String| ClientError::Config { key, message };
        let url = config.url.as_deref().ok_or_else(|| invalid("loki.url", "not set".into()))?;
        let url =
            reqwest::Url::parse(url).map_err(|error| invalid("loki.url", error.to_string()))?;
        let tenant_id = config
            .tenant_id
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| invalid("loki.tenant_id", "not a valid header value".into()))?;
        let http = http_client(config)?;
        let credentials = Arc::new(credentials(config)?);
        Ok(Self {
            http,
            url,
            tenant_id,
            encoder: Arc::default(),
            backoff: Backoff { min: config.min_backoff, max: config.max_backoff },
            metrics,
            log_limiter: Arc::new(LogLimiter::new(LOG_INTERVAL)),
            credentials,
        })
    }

    /// A clone with its own encoding buffers, for a concurrent pusher.
    pub fn clone_for_worker(&self) -> Self {
        Self { encoder: Arc::default(), ..self.clone() }
    }

    /// Pushes `batch` until Loki stores or refuses it, retrying with backoff in between and
    /// splitting it when Loki finds it too large. When `abort` is cancelled, gives up: what is
    /// left is abandoned (its requests are not acknowledged) and false is returned.
    pub async fn deliver(&self, batch: Batch, abort: &CancellationToken) -> bool {
        let mut queue = vec![batch];
        while let Some(batch) = queue.pop() {
            match self.push_until_answered(&batch, abort).await {
                None => {
                    batch.abandon();
                    for rest in &queue {
                        rest.abandon();
                    }
                    return false;
                }
                Some(PushOutcome::Delivered) => {
                    self.metrics.entries_pushed.inc_by(batch.entry_count() as u64);
                    self.metrics.bytes_pushed.inc_by(batch.line_bytes() as u64);
                }
                Some(PushOutcome::Rejected { status, message }) => {
                    if status == StatusCode::PAYLOAD_TOO_LARGE && batch.entry_count() > 1 {
                        let (first, second) = batch.split_in_half().expect("more than one entry");
                        debug!(
                            entries = first.entry_count() + second.entry_count(),
                            "batch too large for loki; splitting it"
                        );
                        queue.push(second);
                        queue.push(first);
                        continue;
                    }
                    self.count_rejection(&batch, status, &message);
                }
                Some(PushOutcome::Retry { .. }) => unreachable!("retries are handled inside"),
            }
        }
        true
    }

    /// Sends the batch until Loki stores or refuses it; `None` when aborted first.
    async fn push_until_answered(
        &self,
        batch: &Batch,
        abort: &CancellationToken,
    ) -> Option<PushOutcome> {
        let body = self.encode(batch);
        let tenant = batch_tenant(batch);
        let mut attempt = 0;
        loop {
            let outcome = tokio::select! {
                outcome = self.post(body.clone(), tenant.as_ref()) => outcome,
                () = abort.cancelled() => return None,
            };
            let PushOutcome::Retry { reason, retry_after } = outcome else {
                self.recycle(body);
                return Some(outcome);
            };
            let wait =
                retry_after.unwrap_or_else(|| self.backoff.wait(attempt)).min(self.backoff.max);
            self.metrics.push_retries.inc();
            if let Some(held_back) = self.log_limiter.allow("retry") {
                warn!(%reason, attempt, wait = ?wait, entries = batch.entry_count(), held_back, "push failed; will retry");
            }
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = abort.cancelled() => return None,
            }
        }
    }

    fn encode(&self, batch: &Batch) -> bytes::Bytes {
        self.encoder().encode(batch.streams())
    }

    fn recycle(&self, body: bytes::Bytes) {
        self.encoder().recycle(body);
    }

    fn encoder(&self) -> std::sync::MutexGuard<'_, PushEncoder> {
        self.encoder.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a refused batch as dropped, and logs Loki's reason once per status and interval.
    fn count_rejection(&self, batch: &Batch, status: StatusCode, message: &str) {
        let reason = rejection_reason(status);
        self.metrics.dropped(reason, batch.entry_count() as u64);
        if let Some(held_back) = self.log_limiter.allow(reason) {
            error!(
                status = status.as_u16(),
                loki_says = %message,
                entries = batch.entry_count(),
                held_back,
                "loki refused a batch; its entries are dropped"
            );
        }
    }

    /// Sends one push for `tenant` (the configured `tenant_id` when `None`) and classifies
    /// the answer.
    async fn post(&self, body: bytes::Bytes, tenant: Option<&HeaderValue>) -> PushOutcome {
        let mut request = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(body);
        if let Some(tenant_id) = tenant.or(self.tenant_id.as_ref()) {
            request = request.header("X-Scope-OrgID", tenant_id.clone());
        }
        if let Some(authorization) = self.credentials.header() {
            request = request.header(AUTHORIZATION, authorization);
        }
        let started = Instant::now();
        let response = request.send().await;
        self.metrics.push_duration.observe(started.elapsed().as_secs_f64());
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                self.count_request("error");
                return PushOutcome::Retry { reason: transport_reason(&error), retry_after: None };
            }
        };
        let status = response.status();
        self.count_request(status.as_str());
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.text().await.unwrap_or_default();
        classify(status, retry_after, truncate(body))
    }

    fn count_request(&self, status: &str) {
        let labels = StatusLabels { status: status.to_owned() };
        self.metrics.loki_requests.get_or_create(&labels).inc();
    }
}

/// The `X-Scope-OrgID` of a batch whose tenant came from its records. Such tenants were checked
/// against Loki's rules, which allow only characters a header may carry.
fn batch_tenant(batch: &Batch) -> Option<HeaderValue> {
    batch.tenant().and_then(|tenant| HeaderValue::from_str(tenant).ok())
}

/// The `entries_dropped` reason for a refusal: `loki_<status>` for the statuses Loki uses.
fn rejection_reason(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "loki_400",
        401 => "loki_401",
        403 => "loki_403",
        404 => "loki_404",
        413 => "loki_413",
        422 => "loki_422",
        _ => "loki_other_4xx",
    }
}

/// A short description of a transport error; reqwest's own text may carry the URL, which can
/// hold credentials, so it is left out.
fn transport_reason(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    match std::error::Error::source(error) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_owned(),
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses_like_loki_documents_them() {
        let outcome = |code| classify(StatusCode::from_u16(code).unwrap(), None, String::new());
        assert_eq!(outcome(204), PushOutcome::Delivered);
        assert_eq!(outcome(200), PushOutcome::Delivered);
        for code in [429, 500, 502, 503, 504] {
            assert!(matches!(outcome(code), PushOutcome::Retry { .. }), "{code}");
        }
        for code in [400, 401, 403, 404, 413, 422] {
            assert!(matches!(outcome(code), PushOutcome::Rejected { .. }), "{code}");
        }
    }

    #[test]
    fn backoff_stays_within_its_bounds_and_grows() {
        let backoff = Backoff { min: Duration::from_millis(100), max: Duration::from_secs(2) };
        for attempt in 0..40 {
            let wait = backoff.wait(attempt);
            assert!(wait >= backoff.min && wait <= backoff.max, "{attempt}: {wait:?}");
        }
        let late_max = (0..200).map(|_| backoff.wait(10)).max().unwrap();
        assert!(late_max > Duration::from_millis(400), "ceiling grows: {late_max:?}");
    }

    #[test]
    fn truncates_long_answers_on_a_char_boundary() {
        let text = truncate("é".repeat(1000));
        assert!(text.len() <= MAX_REASON_BYTES + '…'.len_utf8());
        assert!(text.ends_with('…'));
    }
}
