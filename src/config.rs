//! The configuration: one TOML file, with defaults that reproduce the fluent-bit setup that
//! fwd2loki replaces, and overrides from command-line flags and `FWD2LOKI_*` variables.
//!
//! Every problem is reported before anything starts, naming the key, e.g.
//! `loki.batch_wait: invalid duration "1x"`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::loki::labels::is_valid_name;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How long a shutdown (SIGTERM, SIGINT) may take to deliver what was received.
    /// Default is 5 s, Nomad's default `kill_timeout`.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    /// Where and how forward-protocol clients are received.
    pub input: InputConfig,
    /// How records become Loki streams and how they are pushed.
    pub loki: LokiConfig,
    /// How much data may wait in memory between input and Loki.
    pub buffer: BufferConfig,
    /// fwd2loki's own logs.
    pub log: LogConfig,
    /// The HTTP endpoints for operators.
    pub server: ServerConfig,
}

/// The HTTP endpoints: `/metrics`, `/health` and `/ready`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port` to serve on, or `""` for no HTTP server. Default is `127.0.0.1:24231`:
    /// loopback only, so that exposing metrics to the network is a choice.
    pub listen: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:24231".to_owned() }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            shutdown_timeout: Duration::from_secs(5),
            input: InputConfig::default(),
            loki: LokiConfig::default(),
            buffer: BufferConfig::default(),
            log: LogConfig::default(),
            server: ServerConfig::default(),
        }
    }
}

/// The forward-protocol listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputConfig {
    /// Addresses to listen on: `host:port` for TCP, `unix:/path` for a Unix socket.
    /// Default is `["0.0.0.0:24224"]`, the port Docker's fluentd driver uses.
    pub listen: Vec<ListenAddr>,
    /// Largest forward request accepted; a larger one closes its connection.
    /// Default is 8 MiB.
    #[serde(deserialize_with = "de_size")]
    pub max_message_bytes: u64,
    /// Largest size a gzip-compressed request may inflate to. Default is 64 MiB.
    #[serde(deserialize_with = "de_size")]
    pub max_decompressed_bytes: u64,
    /// Most connections open at once; more are closed as soon as they are accepted.
    /// Default is 4096.
    pub max_connections: usize,
    /// A connection that receives nothing for this long while a request is incomplete (or,
    /// with a shared key, before it answers HELO) is closed. A connection idle *between*
    /// requests stays open: Docker keeps one per container, and a line written into a
    /// connection the server has closed is lost. Default is 5 min.
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// A file holding the forward protocol's shared key; with it, clients must pass the
    /// HELO/PING/PONG handshake. Docker's driver cannot, so leave it unset for Docker.
    /// The variable `FWD2LOKI_SHARED_KEY` sets the key instead of a file. Default is none.
    pub shared_key_file: Option<PathBuf>,
    /// The name the server gives clients in the handshake. Default is this host's name.
    pub self_hostname: Option<String>,
    /// Users that must also authenticate in the handshake. Default is none.
    pub users: Vec<ForwardUser>,
    /// TLS on the TCP listeners. Default is none (plain TCP).
    pub tls: Option<ForwardTls>,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            listen: vec![ListenAddr::Tcp("0.0.0.0:24224".into())],
            max_message_bytes: 8 << 20,
            max_decompressed_bytes: 64 << 20,
            max_connections: 4096,
            idle_timeout: Duration::from_secs(300),
            shared_key_file: None,
            self_hostname: None,
            users: Vec::new(),
            tls: None,
        }
    }
}

/// A user of the forward handshake.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardUser {
    /// The username.
    pub username: String,
    /// A file holding the password.
    pub password_file: PathBuf,
}

/// TLS settings of the forward listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardTls {
    /// The server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// The server's private key (PEM).
    pub key_file: PathBuf,
    /// CA certificates (PEM); when set, clients must present a certificate signed by one.
    pub client_ca_file: Option<PathBuf>,
}

/// A listen address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP `host:port`.
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl ListenAddr {
    /// Parses `host:port`, `tcp://host:port`, `unix:/path` or `unix:///path`.
    ///
    /// # Errors
    ///
    /// A message saying what is wrong with `text`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix://").or_else(|| text.strip_prefix("unix:")) {
            if !path.starts_with('/') {
                return Err(format!("unix socket path in {text:?} must be absolute"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let address = text.strip_prefix("tcp://").unwrap_or(text);
        let port = address.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
        match port {
            Some((host, Ok(_))) if !host.is_empty() => Ok(Self::Tcp(address.to_owned())),
            _ => Err(format!("{text:?} is neither host:port nor unix:/path")),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(address) => f.write_str(address),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How a record's remaining keys become the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    /// A JSON object of the remaining keys, in record order.
    #[default]
    Json,
    /// `key=value` pairs separated by spaces, values quoted where needed (logfmt).
    KeyValue,
    /// The value of one key (`line_key`) as plain text.
    Raw,
}

/// What to do with a line longer than `max_line_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OversizedLines {
    /// Cut it to the limit.
    #[default]
    Truncate,
    /// Drop the entry.
    Drop,
}

/// Records to Loki streams, and the push API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LokiConfig {
    /// The push URL, e.g. `http://loki:3100/loki/api/v1/push`. Without it, what would be pushed
    /// is printed to standard output as JSON lines. Default is none.
    pub url: Option<String>,
    /// Sent as `X-Scope-OrgID` when set. Default is none.
    pub tenant_id: Option<String>,
    /// Longest time an entry waits for its batch to fill. Default is 1 s.
    #[serde(deserialize_with = "de_duration")]
    pub batch_wait: Duration,
    /// Line bytes at which a batch is sent. Default is 1 MiB.
    #[serde(deserialize_with = "de_size")]
    pub batch_size: u64,
    /// Longest time an entry waits for its batch when its client waits for a forward ack
    /// (Docker's `fluentd-request-ack`): such a client sends its next line only after the ack,
    /// so waiting the full `batch_wait` would cap it at one line per `batch_wait`.
    /// Default is 20 ms.
    #[serde(deserialize_with = "de_duration")]
    pub ack_batch_wait: Duration,
    /// Longest line sent; Loki refuses longer ones (its `max_line_size`, 256 KiB by default).
    /// Default is 256 KiB.
    #[serde(deserialize_with = "de_size")]
    pub max_line_bytes: u64,
    /// What happens to a longer line: `truncate` (cut to the limit at a character boundary)
    /// or `drop`. Counted either way. Default is `truncate`.
    pub oversized_lines: OversizedLines,
    /// Pushes in flight at once. Streams are spread over this many push lanes by their labels,
    /// and each lane sends one push at a time, so a stream's entries reach Loki in order while
    /// the lanes hide each other's round trips. Default is 2.
    pub max_concurrent_pushes: usize,
    /// Time limit of one push request. Default is 10 s.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// A file holding a bearer token for Loki, read again whenever it changes (rotated
    /// tokens are used without a restart). `FWD2LOKI_LOKI_BEARER_TOKEN` sets a fixed token
    /// instead. Default is none.
    pub bearer_token_file: Option<PathBuf>,
    /// The username for basic auth. Default is none.
    pub basic_auth_user: Option<String>,
    /// A file holding the basic-auth password, read again whenever it changes.
    /// `FWD2LOKI_LOKI_PASSWORD` sets a fixed password instead. Default is none.
    pub basic_auth_password_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted for Loki's TLS certificate, besides the system's.
    /// Default is none.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM) for Loki's mutual TLS, with `key_file`.
    /// Default is none.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM). Default is none.
    pub key_file: Option<PathBuf>,
    /// Accept any certificate from Loki. Only for tests: anyone on the path can read and
    /// change the pushes, and credentials sent with them. Default is false.
    pub insecure_skip_verify: bool,
    /// Most streams in use at once (the cardinality guard). Entries of new streams past it go
    /// to one overflow stream, the static labels plus `stream_overflow="true"`, counted in
    /// `fwd2loki_stream_overflow_entries_total`. Default is 2000.
    pub max_streams: usize,
    /// Shortest wait before a push is retried; waits double up to `max_backoff`, with full
    /// jitter. Default is 500 ms.
    #[serde(deserialize_with = "de_duration")]
    pub min_backoff: Duration,
    /// Longest wait between retries (a `Retry-After` from Loki is capped by it too).
    /// Default is 30 s.
    #[serde(deserialize_with = "de_duration")]
    pub max_backoff: Duration,
    /// Labels of every stream. Default is `job = "fluent-bit"` and `hostname` = this host's name.
    pub labels: BTreeMap<String, String>,
    /// Record keys whose values become labels (and leave the line); names Loki would reject are
    /// made valid (`container.name` becomes `container_name`). Default is `["container_name"]`.
    pub label_keys: Vec<String>,
    /// Record keys dropped. Default is `["source", "container_id"]`.
    pub remove_keys: Vec<String>,
    /// `json`, `key_value` or `raw`. Default is `json`.
    pub line_format: LineFormat,
    /// The key whose value is the line when `line_format = "raw"`. Default is `log`.
    pub line_key: String,
    /// When one key is left, its value is the line rather than an object of one key, so a
    /// plain Docker record arrives as the text the container wrote. Default is true.
    pub drop_single_key: bool,
    /// Join the records Docker splits a line of more than 16 KiB into (marked with
    /// `partial_message`, `partial_id`, `partial_ordinal` and `partial_last`) back into one
    /// entry holding the whole line, per connection; the partial keys then never reach Loki.
    /// When false, each part is an entry of its own, partial keys included. Default is true.
    pub reassemble_partials: bool,
    /// How long a line being joined waits for its next part before it is shipped as far as it
    /// got. Docker sends the parts of a line back to back, so only a lost part or a program
    /// pausing in the middle of a line waits this long. Default is 5 s.
    #[serde(deserialize_with = "de_duration")]
    pub partial_timeout: Duration,
    /// Most bytes of text a split line is joined to; the rest of a longer line is skipped
    /// (counted), which bounds what a connection holds. The joined line then meets
    /// `max_line_bytes` like any other. Default is 1 MiB, four times Loki's default line limit,
    /// so that normally `max_line_bytes` decides.
    #[serde(deserialize_with = "de_size")]
    pub max_partial_bytes: u64,
    /// Give the entries of a stream strictly increasing timestamps in arrival order: an entry
    /// that is not after the previous one of its stream is moved to 1 ns after it. Loki returns
    /// entries of equal timestamps in any order, and Docker's timestamps are whole seconds
    /// unless `fluentd-sub-second-precision` is set. Default is true.
    pub keep_arrival_order: bool,
    /// How much older than the previous entry of its stream an entry may be and still be moved
    /// after it; an older entry keeps its own time (counted). Default is 1 s, the resolution of
    /// Docker's default timestamps, so no entry moves by more than its source's precision.
    #[serde(deserialize_with = "de_duration")]
    pub order_window: Duration,
    /// Record keys sent as structured metadata (Loki 3) instead of in the line or the labels,
    /// e.g. `["container_id"]` to keep it searchable without a label for every container.
    /// Names Loki would reject are made valid as for `label_keys`. A key listed here is kept
    /// even when `remove_keys` lists it too. Default is none.
    pub structured_metadata_keys: Vec<String>,
    /// A record key whose value is the entry's tenant (`X-Scope-OrgID`); the key leaves the
    /// line. A record without it, or with a value Loki does not accept as a tenant id, goes to
    /// `tenant_id` (or to no tenant). Default is none.
    pub tenant_key: Option<String>,
    /// Labels taken from nested record values: record paths such as `kubernetes.labels.app`
    /// mapped to label names. A path may be written as dotted keys or nested tables; a record
    /// key that itself contains dots is found too. The record, and so the line, is left as it
    /// is (use `remove_keys` to drop a key). Default is none.
    #[serde(deserialize_with = "de_label_map")]
    pub label_map: BTreeMap<String, String>,
}

impl Default for LokiConfig {
    fn default() -> Self {
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        Self {
            url: None,
            tenant_id: None,
            batch_wait: Duration::from_secs(1),
            batch_size: 1 << 20,
            ack_batch_wait: Duration::from_millis(20),
            max_line_bytes: 256 << 10,
            oversized_lines: OversizedLines::Truncate,
            max_concurrent_pushes: 2,
            timeout: Duration::from_secs(10),
            bearer_token_file: None,
            basic_auth_user: None,
            basic_auth_password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            insecure_skip_verify: false,
            max_streams: 2000,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            labels: BTreeMap::from([
                ("job".to_owned(), "fluent-bit".to_owned()),
                ("hostname".to_owned(), hostname),
            ]),
            label_keys: vec!["container_name".to_owned()],
            remove_keys: vec!["source".to_owned(), "container_id".to_owned()],
            line_format: LineFormat::Json,
            line_key: "log".to_owned(),
            drop_single_key: true,
            reassemble_partials: true,
            partial_timeout: Duration::from_secs(5),
            max_partial_bytes: 1 << 20,
            keep_arrival_order: true,
            order_window: Duration::from_secs(1),
            structured_metadata_keys: Vec::new(),
            tenant_key: None,
            label_map: BTreeMap::new(),
        }
    }
}

impl LokiConfig {
    /// Checks the keys that say where record values go: labels, structured metadata, tenant.
    fn check_record_rules(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Key { key: key.into(), message };
        if self.reassemble_partials && self.partial_timeout.is_zero() {
            return Err(invalid("loki.partial_timeout", "must be greater than zero".into()));
        }
        if self.max_partial_bytes == 0 {
            return Err(invalid("loki.max_partial_bytes", "must be greater than zero".into()));
        }
        let is_label_key = |key: &String| self.label_keys.contains(key);
        if let Some(key) = self.structured_metadata_keys.iter().find(|key| is_label_key(key)) {
            let message = format!("{key:?} is in label_keys too; it can be one or the other");
            return Err(invalid("loki.structured_metadata_keys", message));
        }
        if let Some(key) = &self.tenant_key {
            if key.is_empty() {
                return Err(invalid("loki.tenant_key", "must not be empty".into()));
            }
            if is_label_key(key) || self.structured_metadata_keys.contains(key) {
                let message = format!(
                    "{key:?} is in label_keys or structured_metadata_keys; to keep the tenant as \
                     a label too, map it with label_map"
                );
                return Err(invalid("loki.tenant_key", message));
            }
        }
        for (path, name) in &self.label_map {
            if path.is_empty() || path.starts_with('.') || path.ends_with('.') {
                return Err(invalid("loki.label_map", format!("{path:?} is not a record path")));
            }
            if !is_valid_name(name) {
                let message = format!(
                    "{name:?} (for {path:?}) is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, \
                     not starting with __)"
                );
                return Err(invalid("loki.label_map", message));
            }
        }
        Ok(())
    }
}

/// Where entries wait between the listeners and Loki.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BufferConfig {
    /// `memory`, or `disk` to survive restarts and outages longer than memory can hold.
    /// Default is `memory`.
    #[serde(rename = "type")]
    pub kind: BufferKind,
    /// The buffer's size. In memory: the entries held, counting lines and a fixed overhead per
    /// entry. On disk: the segment files. When full, connections stop being read until Loki
    /// catches up; nothing is dropped. Default is 32 MiB, which keeps the whole process under
    /// 64 MiB resident even with the buffer full.
    #[serde(deserialize_with = "de_size")]
    pub max_bytes: u64,
    /// The directory of the disk buffer's segment files. Required with `type = "disk"`.
    pub path: Option<PathBuf>,
    /// With `type = "disk"`: the memory for entries read back from disk on their way to Loki.
    /// Default is 32 MiB.
    #[serde(deserialize_with = "de_size")]
    pub memory_bytes: u64,
}

/// The kind of buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    /// Entries wait in memory; acks are sent once Loki has them.
    #[default]
    Memory,
    /// Entries are written to segment files first; acks are sent once they are on disk.
    Disk,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self { kind: BufferKind::Memory, max_bytes: 32 << 20, path: None, memory_bytes: 32 << 20 }
    }
}

/// fwd2loki's own logs, written to standard error.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `RUST_LOG`-style filter, e.g. `info` or `fwd2loki=debug`. Default is `info`.
    pub level: String,
    /// `text` for people or `json` for Loki. Default is `text`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: LogFormat::Text }
    }
}

/// The format of fwd2loki's own logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration problem, naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key has a value that is not allowed, or is not a key at all.
    #[error("{key}: {message}")]
    Key {
        /// The dotted key, e.g. `loki.batch_wait`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Values given on the command line or in `FWD2LOKI_*` variables; they take precedence over the
/// file. Each is written in the file's syntax (sizes like `1MiB`, durations like `500ms`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `input.listen`.
    pub listen: Vec<String>,
    /// `loki.url`.
    pub loki_url: Option<String>,
    /// `loki.tenant_id`.
    pub tenant_id: Option<String>,
    /// `loki.batch_wait`.
    pub batch_wait: Option<String>,
    /// `loki.batch_size`.
    pub batch_size: Option<String>,
    /// `log.level`.
    pub log_level: Option<String>,
    /// `log.format`.
    pub log_format: Option<LogFormat>,
    /// `server.listen`.
    pub server_listen: Option<String>,
}

impl Config {
    /// Reads `path` (or starts from the defaults when `None`), applies `overrides` and checks
    /// the result.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file or key at fault.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?,
            None => String::new(),
        };
        let mut table: toml::Table =
            text.parse().map_err(|error: toml::de::Error| ConfigError::Syntax {
                path: path.unwrap_or(Path::new("")).to_owned(),
                message: error.to_string(),
            })?;
        overrides.apply_to(&mut table);
        Self::from_table(table)
    }

    /// Reads a configuration from TOML `text` that did not come from a file of its own (such as
    /// a converted fluent-bit configuration, `source`), applies `overrides` and checks the result
    /// as [`Config::load`] does.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `source` or the key at fault.
    pub fn load_text(
        text: &str,
        source: &Path,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
            ConfigError::Syntax { path: source.to_owned(), message: error.to_string() }
        })?;
        overrides.apply_to(&mut table);
        Self::from_table(table)
    }

    /// Reads a configuration from TOML text, without overrides.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the key at fault.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
            ConfigError::Syntax { path: PathBuf::new(), message: error.to_string() }
        })?;
        Self::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let config: Self = serde_path_to_error::deserialize(table).map_err(|error| {
            let key = error.path().to_string();
            ConfigError::Key { key, message: error.into_inner().message().to_owned() }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types alone cannot.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Key { key: key.into(), message };
        if self.input.listen.is_empty() {
            return Err(invalid("input.listen", "at least one address is needed".into()));
        }
        if self.input.max_message_bytes < 1024 {
            return Err(invalid("input.max_message_bytes", "must be at least 1KiB".into()));
        }
        if let Some(url) = &self.loki.url {
            match reqwest::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                Ok(_) => return Err(invalid("loki.url", format!("{url:?} is not http(s)"))),
                Err(error) => return Err(invalid("loki.url", format!("{url:?}: {error}"))),
            }
        }
        if self.loki.batch_size == 0 {
            return Err(invalid("loki.batch_size", "must be greater than zero".into()));
        }
        if self.loki.batch_wait.is_zero() || self.loki.timeout.is_zero() {
            let key = if self.loki.timeout.is_zero() { "loki.timeout" } else { "loki.batch_wait" };
            return Err(invalid(key, "must be greater than zero".into()));
        }
        let basic = self.loki.basic_auth_user.is_some();
        if basic && self.loki.bearer_token_file.is_some() {
            let message = "set either bearer_token_file or basic auth, not both".into();
            return Err(invalid("loki.bearer_token_file", message));
        }
        if self.loki.basic_auth_password_file.is_some() && !basic {
            return Err(invalid(
                "loki.basic_auth_user",
                "needed with basic_auth_password_file".into(),
            ));
        }
        if self.loki.cert_file.is_some() != self.loki.key_file.is_some() {
            return Err(invalid("loki.key_file", "cert_file and key_file go together".into()));
        }
        if self.loki.max_concurrent_pushes == 0 {
            return Err(invalid("loki.max_concurrent_pushes", "must be at least 1".into()));
        }
        if self.loki.max_line_bytes == 0 {
            return Err(invalid("loki.max_line_bytes", "must be greater than zero".into()));
        }
        if self.loki.min_backoff.is_zero() || self.loki.max_backoff < self.loki.min_backoff {
            let message = "min_backoff must be greater than zero and at most max_backoff".into();
            return Err(invalid("loki.min_backoff", message));
        }
        if let Some(name) = self.loki.labels.keys().find(|name| !is_valid_name(name)) {
            let message = format!(
                "{name:?} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
            );
            return Err(invalid("loki.labels", message));
        }
        let no_labels = self.loki.labels.is_empty() && self.loki.label_keys.is_empty();
        if no_labels {
            return Err(invalid("loki.labels", "Loki needs at least one label".into()));
        }
        // The memory that holds batches: the whole buffer, or the disk buffer's read side.
        let (memory_key, memory) = match self.buffer.kind {
            BufferKind::Memory => ("buffer.max_bytes", self.buffer.max_bytes),
            BufferKind::Disk => ("buffer.memory_bytes", self.buffer.memory_bytes),
        };
        if memory < self.loki.batch_size {
            return Err(invalid(memory_key, "must be at least loki.batch_size".into()));
        }
        if self.buffer.kind == BufferKind::Disk && self.buffer.path.is_none() {
            return Err(invalid("buffer.path", "required with type = \"disk\"".into()));
        }
        self.loki.check_record_rules()?;
        Ok(())
    }
}

impl Overrides {
    /// Writes the given values into the parsed file, so they are checked like the file's own.
    fn apply_to(&self, table: &mut toml::Table) {
        let mut set = |section: &str, key: &str, value: toml::Value| {
            let section =
                table.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(section) = section {
                section.insert(key.to_owned(), value);
            }
        };
        if !self.listen.is_empty() {
            let listen = self.listen.iter().cloned().map(toml::Value::String).collect();
            set("input", "listen", toml::Value::Array(listen));
        }
        let strings = [
            ("loki", "url", &self.loki_url),
            ("loki", "tenant_id", &self.tenant_id),
            ("loki", "batch_wait", &self.batch_wait),
            ("loki", "batch_size", &self.batch_size),
            ("log", "level", &self.log_level),
            ("server", "listen", &self.server_listen),
        ];
        for (section, key, value) in strings {
            if let Some(value) = value {
                set(section, key, toml::Value::String(value.clone()));
            }
        }
        if let Some(format) = self.log_format {
            let name = match format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            };
            set("log", "format", toml::Value::String(name.to_owned()));
        }
    }
}

/// Reads a size: a number of bytes, or a string such as `"1MiB"`, `"512KB"` or `"1001024"`.
fn de_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(bytes) => Ok(bytes),
        Size::Text(text) => parse_size(&text).map_err(serde::de::Error::custom),
    }
}

/// Parses a size such as `1MiB`, `64 KB` or `1001024`.
///
/// # Errors
///
/// A message naming the text that is not a size.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|error| format!("invalid size {text:?}: {error}"))
}

/// Reads `label_map`: a table from record paths to label names, where a path may be written as
/// dotted keys (`kubernetes.labels.app = "app"`), as nested tables (the shape of the label map
/// file of Grafana's fluent-bit plugin) or as one quoted key. All are flattened to dotted paths.
fn de_label_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a label name or a table of record keys")]
    enum Node {
        Name(String),
        Table(BTreeMap<String, Node>),
    }
    fn flatten(prefix: &str, table: BTreeMap<String, Node>, out: &mut BTreeMap<String, String>) {
        for (key, node) in table {
            let path = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
            match node {
                Node::Name(name) => {
                    out.insert(path, name);
                }
                Node::Table(table) => flatten(&path, table, out),
            }
        }
    }
    let mut paths = BTreeMap::new();
    flatten("", BTreeMap::deserialize(deserializer)?, &mut paths);
    Ok(paths)
}

/// Reads a duration such as `"1s"`, `"500ms"` or `"2m 30s"`.
fn de_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map_err(|error| serde::de::Error::custom(format!("invalid duration {text:?}: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_error(text: &str) -> (String, String) {
        match Config::from_toml(text) {
            Err(ConfigError::Key { key, message }) => (key, message),
            other => panic!("expected a key error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_reproduce_the_reference_deployment() {
        let config = Config::from_toml("").expect("empty config is valid");
        assert_eq!(config.input.listen, [ListenAddr::Tcp("0.0.0.0:24224".into())]);
        assert_eq!(config.loki.labels["job"], "fluent-bit");
        assert!(config.loki.labels.contains_key("hostname"));
        assert_eq!(config.loki.label_keys, ["container_name"]);
        assert_eq!(config.loki.remove_keys, ["source", "container_id"]);
        assert_eq!(config.loki.line_format, LineFormat::Json);
        assert!(config.loki.drop_single_key);
        assert_eq!(config.loki.batch_wait, Duration::from_secs(1));
        assert_eq!(config.loki.batch_size, 1 << 20);
        assert_eq!(config.loki.url, None);
    }

    #[test]
    fn reads_every_section() {
        let config = Config::from_toml(
            r#"
            [input]
            listen = ["127.0.0.1:24224", "unix:/run/fwd2loki.sock"]
            max_message_bytes = "1MiB"
            [loki]
            url = "http://loki:3100/loki/api/v1/push"
            tenant_id = "team-a"
            batch_wait = "250ms"
            batch_size = 1001024
            labels = { job = "docker", env = "prod" }
            line_format = "key_value"
            [buffer]
            max_bytes = "32MiB"
            [log]
            level = "debug"
            format = "json"
            "#,
        )
        .expect("valid config");
        assert_eq!(config.input.listen[1], ListenAddr::Unix("/run/fwd2loki.sock".into()));
        assert_eq!(config.input.max_message_bytes, 1 << 20);
        assert_eq!(config.loki.batch_wait, Duration::from_millis(250));
        assert_eq!(config.loki.batch_size, 1_001_024);
        assert_eq!(config.loki.labels.len(), 2);
        assert_eq!(config.loki.line_format, LineFormat::KeyValue);
        assert_eq!(config.buffer.max_bytes, 32 << 20);
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn errors_name_the_key() {
        let (key, message) = key_error("[loki]\nbatch_wait = \"1x\"");
        assert_eq!(key, "loki.batch_wait");
        assert!(message.contains("invalid duration \"1x\""), "{message}");

        let (key, message) = key_error("[loki]\nbatch_wate = \"1s\"");
        assert_eq!(key, "loki.batch_wate");
        assert!(message.contains("unknown field `batch_wate`"), "{message}");

        let (key, message) = key_error("[loki]\nbatch_size = \"lots\"");
        assert_eq!(key, "loki.batch_size");
        assert!(message.contains("invalid size \"lots\""), "{message}");

        let (key, message) = key_error("[loki]\nlabels = { \"container.name\" = \"x\" }");
        assert_eq!(key, "loki.labels");
        assert!(message.contains("\"container.name\" is not a valid label name"), "{message}");

        let (key, _) = key_error("[input]\nlisten = [\"nowhere\"]");
        assert_eq!(key, "input.listen[0]");

        let (key, _) = key_error("[loki]\nurl = \"ftp://x\"");
        assert_eq!(key, "loki.url");

        let (key, _) = key_error("[loki]\nline_format = \"yaml\"");
        assert_eq!(key, "loki.line_format");

        let (key, _) = key_error("[bogus]\nx = 1");
        assert_eq!(key, "bogus");
    }

    #[test]
    fn overrides_win_over_the_file_and_are_checked_the_same_way() {
        let mut table: toml::Table = "[loki]\nbatch_wait = \"5s\"".parse().unwrap();
        let overrides = Overrides {
            batch_wait: Some("2s".into()),
            listen: vec!["unix:/tmp/x.sock".into()],
            ..Overrides::default()
        };
        overrides.apply_to(&mut table);
        let config = Config::from_table(table).expect("valid overrides");
        assert_eq!(config.loki.batch_wait, Duration::from_secs(2));
        assert_eq!(config.input.listen, [ListenAddr::Unix("/tmp/x.sock".into())]);

        let mut table = toml::Table::new();
        Overrides { batch_size: Some("huge".into()), ..Overrides::default() }.apply_to(&mut table);
        assert!(
            matches!(Config::from_table(table), Err(ConfigError::Key { key, .. }) if key == "loki.batch_size")
        );
    }

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            ListenAddr::parse("tcp://[::1]:24224"),
            Ok(ListenAddr::Tcp("[::1]:24224".into()))
        );
        assert_eq!(
            ListenAddr::parse("unix:///run/x.sock"),
            Ok(ListenAddr::Unix("/run/x.sock".into()))
        );
        assert!(ListenAddr::parse("unix:relative.sock").is_err());
        assert!(ListenAddr::parse("host:99999").is_err());
        assert!(ListenAddr::parse(":24224").is_err());
    }

    #[test]
    fn beyond_fluent_bit_keys_have_their_defaults_and_are_read() {
        let defaults = Config::from_toml("").unwrap().loki;
        assert!(defaults.reassemble_partials && defaults.keep_arrival_order);
        assert_eq!(defaults.partial_timeout, Duration::from_secs(5));
        assert_eq!(defaults.max_partial_bytes, 1 << 20);
        assert_eq!(defaults.order_window, Duration::from_secs(1));
        assert!(defaults.structured_metadata_keys.is_empty() && defaults.label_map.is_empty());
        assert_eq!(defaults.tenant_key, None);

        let loki = Config::from_toml(
            r#"
            [loki]
            reassemble_partials = false
            partial_timeout = "250ms"
            max_partial_bytes = "64KiB"
            keep_arrival_order = false
            order_window = "2s"
            structured_metadata_keys = ["container_id"]
            tenant_key = "namespace"
            [loki.label_map]
            kubernetes.labels.app = "app"
            "attrs.com.example.team" = "team"
            [loki.label_map.kubernetes.annotations]
            owner = "owner"
            "#,
        )
        .expect("valid config")
        .loki;
        assert!(!loki.reassemble_partials && !loki.keep_arrival_order);
        assert_eq!(loki.partial_timeout, Duration::from_millis(250));
        assert_eq!(loki.max_partial_bytes, 64 << 10);
        assert_eq!(loki.order_window, Duration::from_secs(2));
        assert_eq!(loki.structured_metadata_keys, ["container_id"]);
        assert_eq!(loki.tenant_key.as_deref(), Some("namespace"));
        let paths: Vec<(&str, &str)> =
            loki.label_map.iter().map(|(path, name)| (path.as_str(), name.as_str())).collect();
        assert_eq!(
            paths,
            [
                ("attrs.com.example.team", "team"),
                ("kubernetes.annotations.owner", "owner"),
                ("kubernetes.labels.app", "app"),
            ]
        );
    }

    #[test]
    fn conflicting_record_rules_are_refused() {
        let (key, message) = key_error("[loki]\nstructured_metadata_keys = [\"container_name\"]");
        assert_eq!(key, "loki.structured_metadata_keys");
        assert!(message.contains("in label_keys too"), "{message}");

        let (key, _) = key_error("[loki]\ntenant_key = \"container_name\"");
        assert_eq!(key, "loki.tenant_key");

        let (key, message) = key_error("[loki]\nlabel_map = { \"a.b\" = \"not valid\" }");
        assert_eq!(key, "loki.label_map");
        assert!(
            message.contains("\"not valid\" (for \"a.b\") is not a valid label name"),
            "{message}"
        );

        let (key, _) = key_error("[loki]\nlabel_map = { \"a.\" = \"a\" }");
        assert_eq!(key, "loki.label_map");

        let (key, _) = key_error("[loki]\nlabel_map = { a = 1 }");
        assert_eq!(key, "loki.label_map.a");

        let (key, _) = key_error("[loki]\npartial_timeout = \"0s\"");
        assert_eq!(key, "loki.partial_timeout");

        // remove_keys does not win over structured_metadata_keys: no conflict.
        let config = Config::from_toml("[loki]\nstructured_metadata_keys = [\"container_id\"]");
        assert!(config.is_ok());
    }
}
