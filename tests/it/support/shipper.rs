//! Running fwd2loki for a test: in-process through the library, or as the real binary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fwd2loki::config::{Config, ListenAddr};
use fwd2loki::forward::client::{Mode, OutgoingEvent, TimeFormat, encode_requests, send_requests};
use fwd2loki::pipeline::Pipeline;
use tokio::net::{TcpStream, UnixStream};

use super::loki::TestLoki;

/// The hostname label every test shipper uses, so assertions need not ask the OS.
pub(crate) const HOSTNAME: &str = "test-node";

/// A 64-hex container id like Docker's.
pub(crate) const CONTAINER_ID: &str =
    "8c1d0f6b7f2a4e1c9b3d5a7e0f1c2b3a4d5e6f708192a3b4c5d6e7f8091a2b3c";

/// How long a test waits for something that should happen at once.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// A record shaped exactly like one the Docker fluentd driver sends.
pub(crate) fn docker_record(container_name: &str, line: &str) -> serde_json::Value {
    serde_json::json!({
        "container_id": CONTAINER_ID,
        "container_name": container_name,
        "source": "stdout",
        "log": line,
    })
}

/// The labels the default configuration gives a Docker record of `container_name`.
pub(crate) fn docker_labels(container_name: &str) -> BTreeMap<String, String> {
    [("container_name", container_name), ("hostname", HOSTNAME), ("job", "fluent-bit")]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// A configuration for tests: TCP on an ephemeral loopback port plus a Unix socket in `dir`,
/// pushing to `loki`, with a short batch wait.
pub(crate) fn test_config(loki: &TestLoki, dir: &Path) -> Config {
    let mut config = Config::default();
    config.input.listen =
        vec![ListenAddr::Tcp("127.0.0.1:0".into()), ListenAddr::Unix(dir.join("fwd2loki.sock"))];
    config.loki.url = Some(loki.push_url());
    config.loki.labels.insert("hostname".into(), HOSTNAME.into());
    config.loki.batch_wait = Duration::from_millis(100);
    config.loki.min_backoff = Duration::from_millis(20);
    config.loki.max_backoff = Duration::from_millis(200);
    config
}

/// fwd2loki running inside the test process.
pub(crate) struct Shipper {
    pipeline: Pipeline,
    /// The TCP listen address.
    pub(crate) tcp: SocketAddr,
    /// The Unix socket path.
    pub(crate) unix: PathBuf,
    _dir: tempfile::TempDir,
}

impl Shipper {
    /// Starts fwd2loki with [`test_config`] changed by `edit`.
    pub(crate) async fn start(loki: &TestLoki, edit: impl FnOnce(&mut Config)) -> Shipper {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = test_config(loki, dir.path());
        edit(&mut config);
        let pipeline = Pipeline::start(&config).await.expect("fwd2loki starts");
        let tcp = pipeline.listen_addrs()[0].parse().expect("first listener is TCP");
        let unix = dir.path().join("fwd2loki.sock");
        Shipper { pipeline, tcp, unix, _dir: dir }
    }

    /// A new TCP connection to the shipper.
    pub(crate) async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.tcp).await.expect("connects to fwd2loki")
    }

    /// A new Unix-socket connection to the shipper.
    pub(crate) async fn connect_unix(&self) -> UnixStream {
        UnixStream::connect(&self.unix).await.expect("connects to fwd2loki's socket")
    }

    /// The shipper's metrics.
    pub(crate) fn metrics(&self) -> &fwd2loki::metrics::Metrics {
        self.pipeline.metrics()
    }

    /// Bytes held in the memory budget right now.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.pipeline.buffered_bytes()
    }

    /// Shuts down as on SIGTERM.
    pub(crate) async fn stop(self, timeout: Duration) -> fwd2loki::pipeline::ShutdownOutcome {
        self.pipeline.shutdown(timeout).await
    }
}

/// Sends `records` as events of `tag` on a connection, timed `first_ns`, `first_ns + 1`, ...
/// With `ack`, waits until every request is acknowledged.
pub(crate) async fn send_records<S>(
    stream: &mut S,
    mode: Mode,
    time_format: TimeFormat,
    events: &[OutgoingEvent],
    ack: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut requests = Vec::new();
    let chunk = ack.then_some("dGVzdC1jaHVuay1pZA==");
    let chunks = encode_requests("docker.test", mode, time_format, events, chunk, &mut requests);
    send_requests(stream, &requests, &chunks).await.expect("requests are sent and acknowledged");
}

/// fwd2loki run as its own process, from the binary cargo built.
pub(crate) struct BinaryShipper {
    child: Child,
    /// The TCP address it listens on for forward clients.
    pub(crate) tcp: SocketAddr,
    /// The address of its HTTP endpoints (/metrics, /health, /ready).
    pub(crate) http: SocketAddr,
    stdout: Option<std::process::ChildStdout>,
    /// Every line it wrote to standard error so far.
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl BinaryShipper {
    /// Starts the binary with the TOML `config` and waits until it accepts connections. The
    /// forward listener and, unless `config` has a `[server]` section, the HTTP endpoints are
    /// put on ephemeral loopback ports.
    pub(crate) fn start(config: &str) -> BinaryShipper {
        Self::start_with_args(config, &[])
    }

    /// Like [`BinaryShipper::start`], with extra command-line arguments.
    pub(crate) fn start_with_args(config: &str, args: &[&str]) -> BinaryShipper {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("fwd2loki.toml");
        let mut config = config.to_owned();
        if !config.contains("[server]") {
            config.push_str("\n[server]\nlisten = \"127.0.0.1:0\"\n");
        }
        std::fs::write(&path, config).expect("config file is written");
        let config_args = ["--config", path.to_str().expect("UTF-8 path")];
        Self::spawn(dir, &config_args, args, &[])
    }

    /// Starts the binary with `--fluent-bit-config` and the fluent-bit configuration `conf`,
    /// with the environment variables `env` added, and waits until it accepts connections. The
    /// forward listener and the HTTP endpoints are put on ephemeral loopback ports.
    pub(crate) fn start_with_fluent_bit_config(conf: &str, env: &[(&str, &str)]) -> BinaryShipper {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("fluent-bit.conf");
        std::fs::write(&path, conf).expect("fluent-bit config file is written");
        let path = path.to_str().expect("UTF-8 path");
        let args = ["--fluent-bit-config", path, "--server-listen", "127.0.0.1:0"];
        Self::spawn(dir, &args, &[], env)
    }

    /// Runs the binary with `first` arguments, ephemeral loopback listeners and JSON logs, then
    /// `extra` arguments, and waits until it accepts connections.
    fn spawn(
        dir: tempfile::TempDir,
        first: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> BinaryShipper {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fwd2loki"))
            .args(first)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the fwd2loki binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = std::sync::Arc::default();
        let (tcp, http) = wait_for_addresses(stderr, std::sync::Arc::clone(&logs));
        let stdout = child.stdout.take();
        BinaryShipper { child, tcp, http, stdout, logs, _dir: dir }
    }

    /// The lines written to standard error so far.
    pub(crate) fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lines").clone()
    }

    /// The process id, to read its memory use from /proc.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit code.
    pub(crate) fn terminate(mut self) -> (i32, String) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(status.success(), "SIGTERM is delivered");
        let exit = self.child.wait().expect("fwd2loki exits");
        let mut stdout = String::new();
        if let Some(mut out) = self.stdout.take() {
            std::io::Read::read_to_string(&mut out, &mut stdout).expect("stdout is readable");
        }
        (exit.code().expect("exited normally, not by a signal"), stdout)
    }
}

impl Drop for BinaryShipper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the JSON logs until the forward listener and the HTTP server report their addresses
/// (or the process says it is ready without an HTTP server); keeps draining stderr after.
fn wait_for_addresses(
    stderr: std::process::ChildStderr,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> (SocketAddr, SocketAddr) {
    let (found_tx, found_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("fwd2loki: {line}");
            logs.lock().expect("log lines").push(line.clone());
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let address = || log["listen"].as_str().unwrap_or_default().to_owned();
            let found = match log["message"].as_str() {
                Some("accepting forward connections") => Some(("forward", address())),
                Some("serving /metrics, /health and /ready") => Some(("http", address())),
                Some("fwd2loki started") => Some(("started", String::new())),
                _ => None,
            };
            if let Some(found) = found {
                let _ = found_tx.send(found);
            }
        }
    });
    let (mut forward, mut http) = (None, None);
    loop {
        let (kind, address) =
            found_rx.recv_timeout(PATIENCE).expect("fwd2loki reports its addresses");
        match kind {
            "forward" => forward = Some(address),
            "http" => http = Some(address),
            _ => break,
        }
    }
    let forward = forward.expect("a forward listener").parse().expect("ip:port");
    let http =
        http.map_or_else(|| "0.0.0.0:0".parse().expect("valid"), |a| a.parse().expect("ip:port"));
    (forward, http)
}

/// Runs the binary with `args` and returns its exit code and standard error.
pub(crate) fn run_binary(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fwd2loki"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the fwd2loki binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().expect("exited normally"), stderr)
}

/// A process's resident memory in bytes, read from `/proc/<pid>/status`.
pub(crate) fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number");
    kib * 1024
}
