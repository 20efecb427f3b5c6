//! fwd2loki as a child process: the real binary with a generated configuration, found through
//! its JSON logs, and stopped on every way out of a run.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::BenchError;

/// How long fwd2loki may take to start listening.
const STARTUP_PATIENCE: Duration = Duration::from_secs(30);
/// Log lines kept to explain a failure.
const KEPT_LOG_LINES: usize = 40;
/// The log message that carries the listen address in its `listen` field.
const LISTENING_MESSAGE: &str = "accepting forward connections";

/// A running fwd2loki process, killed when dropped.
#[derive(Debug)]
pub struct ShipperProcess {
    child: Child,
    listen: SocketAddr,
    logs: Arc<Mutex<VecDeque<String>>>,
    _config: ConfigFile,
}

impl ShipperProcess {
    /// Starts `exe` with `base_config` (or the defaults) listening on an ephemeral loopback
    /// port and pushing to `loki_url`, and waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// When the configuration cannot be written, the binary does not start, or it does not
    /// report a listen address in time.
    pub async fn start(
        exe: &Path,
        base_config: Option<&toml::Table>,
        loki_url: &str,
        batch_wait: Duration,
    ) -> Result<Self, BenchError> {
        let config = ConfigFile::write(&config_text(base_config, loki_url, batch_wait))
            .map_err(BenchError::io("cannot write fwd2loki's configuration"))?;
        let mut command = Command::new(exe);
        command
            .arg("--config")
            .arg(&config.path)
            .args(["--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Flags and variables win over the file, so none of the user's may leak in.
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("FWD2LOKI_") || name_text == "RUST_LOG" {
                command.env_remove(&name);
            }
        }
        let mut child =
            command.spawn().map_err(BenchError::io("cannot start the fwd2loki binary"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(VecDeque::new()));
        let (listen_tx, listen_rx) = oneshot::channel();
        let thread_logs = Arc::clone(&logs);
        std::thread::spawn(move || read_logs(stderr, listen_tx, &thread_logs));

        let mut process =
            Self { child, listen: SocketAddr::from(([127, 0, 0, 1], 0)), logs, _config: config };
        let reason = match tokio::time::timeout(STARTUP_PATIENCE, listen_rx).await {
            Ok(Ok(Some(listen))) => {
                process.listen = listen;
                return Ok(process);
            }
            Ok(Ok(None)) => "the listen address in its log is not ip:port".to_owned(),
            Ok(Err(_)) => match process.child.wait() {
                Ok(status) => format!("it exited ({status})"),
                Err(error) => format!("it stopped logging: {error}"),
            },
            Err(_) => format!("it did not listen within {STARTUP_PATIENCE:?}"),
        };
        Err(BenchError::ShipperStart { reason, logs: process.recent_logs() })
    }

    /// The forward address it listens on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    ///
    /// # Errors
    ///
    /// [`BenchError::ShipperExited`] with its status and last log lines.
    pub fn ensure_running(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(BenchError::ShipperExited {
                status: status.to_string(),
                logs: self.recent_logs(),
            }),
            Err(error) => Err(BenchError::io("cannot watch fwd2loki")(error)),
        }
    }

    /// Stops it as a service manager would, with SIGTERM, and returns its exit status; kills it
    /// if it is still running after `patience`.
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent or the process cannot be waited for.
    pub async fn stop(&mut self, patience: Duration) -> Result<ExitStatus, BenchError> {
        let pid = i32::try_from(self.pid())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .expect("a child's pid is a positive i32");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .map_err(|error| BenchError::io("cannot send SIGTERM to fwd2loki")(error.into()))?;
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let exited =
                self.child.try_wait().map_err(BenchError::io("cannot wait for fwd2loki"))?;
            if let Some(status) = exited {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                return self.child.wait().map_err(BenchError::io("cannot wait for fwd2loki"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its last log lines, one per line.
    fn recent_logs(&self) -> String {
        let logs = self.logs.lock().expect("log lock is not poisoned");
        logs.iter().map(|line| format!("  fwd2loki: {line}")).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for ShipperProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The configuration: `base` (the user's own settings, if any) with the bench's own keys set
/// over it: loopback listeners, the null receiver as Loki, its batch wait and JSON logs. Labels
/// are fixed to `job` and `hostname` unless `base` gives its own.
fn config_text(base: Option<&toml::Table>, loki_url: &str, batch_wait: Duration) -> String {
    let mut config = base.cloned().unwrap_or_default();
    let listen = vec![toml::Value::from("127.0.0.1:0")];
    sub_table(&mut config, "input").insert("listen".into(), listen.into());
    let loki = sub_table(&mut config, "loki");
    loki.insert("url".into(), loki_url.into());
    loki.insert("batch_wait".into(), humantime::format_duration(batch_wait).to_string().into());
    if !loki.contains_key("labels") {
        let labels = toml::Table::from_iter([
            ("job".to_owned(), "fluent-bit".into()),
            ("hostname".to_owned(), "bench".into()),
        ]);
        loki.insert("labels".into(), labels.into());
    }
    sub_table(&mut config, "log").insert("format".into(), "json".into());
    // The HTTP endpoints run as they do in production, but on a free port, so that the run
    // does not collide with a fwd2loki already serving on this node.
    sub_table(&mut config, "server").insert("listen".into(), "127.0.0.1:0".into());
    format!(
        "# Written by `fwd2loki bench` for one run.\n{}",
        toml::to_string(&config).expect("a TOML table serializes")
    )
}

/// The table under `key`, created (or replacing a value of another type) if needed.
fn sub_table<'a>(config: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    let value = config.entry(key).or_insert_with(|| toml::Table::new().into());
    if !value.is_table() {
        *value = toml::Table::new().into();
    }
    value.as_table_mut().expect("made a table above")
}

/// Keeps the last log lines and sends the listen address once it is logged. Runs until the
/// process closes its standard error, so that it never blocks on a full pipe.
fn read_logs(
    stderr: ChildStderr,
    listen_tx: oneshot::Sender<Option<SocketAddr>>,
    logs: &Mutex<VecDeque<String>>,
) {
    let mut listen_tx = Some(listen_tx);
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if listen_tx.is_some() {
            if let Some(listen) = listen_address(&line) {
                let _ = listen_tx.take().map(|tx| tx.send(listen));
            }
        }
        let mut logs = logs.lock().expect("log lock is not poisoned");
        if logs.len() == KEPT_LOG_LINES {
            logs.pop_front();
        }
        logs.push_back(line);
    }
}

/// The `listen` field of the log line announcing the listener, if `line` is that line.
fn listen_address(line: &str) -> Option<Option<SocketAddr>> {
    let log: serde_json::Value = serde_json::from_str(line).ok()?;
    (log["message"] == LISTENING_MESSAGE)
        .then(|| log["listen"].as_str().and_then(|listen| listen.parse().ok()))
}

/// A configuration file in the temporary directory, removed when dropped.
#[derive(Debug)]
struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    fn write(text: &str) -> std::io::Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let name = format!("fwd2loki-bench-{}-{nanos}.toml", std::process::id());
        let path = std::env::temp_dir().join(name);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        let config = Self { path };
        file.write_all(text.as_bytes())?;
        Ok(config)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> crate::config::Config {
        let config = ConfigFile::write(text).unwrap();
        crate::config::Config::load(Some(&config.path), &Default::default())
            .expect("the generated configuration is valid")
    }

    #[test]
    fn the_configuration_loads() {
        let url = "http://127.0.0.1:9/loki/api/v1/push";
        let loaded = load(&config_text(None, url, Duration::from_millis(100)));
        assert_eq!(loaded.loki.batch_wait, Duration::from_millis(100));
        assert_eq!(loaded.loki.labels["hostname"], "bench");
        assert_eq!(loaded.loki.url.as_deref(), Some(url));
    }

    #[test]
    fn the_users_settings_stay_unless_the_bench_needs_its_own() {
        let base: toml::Table = toml::from_str(
            "[input]\nlisten = [\"0.0.0.0:24224\"]\nmax_message_bytes = \"1MiB\"\n\
             [loki]\nurl = \"http://loki:3100/loki/api/v1/push\"\nbatch_size = 4096\n\
             labels = { job = \"docker\" }\n",
        )
        .unwrap();
        let url = "http://127.0.0.1:9/loki/api/v1/push";
        let loaded = load(&config_text(Some(&base), url, Duration::from_millis(100)));
        assert_eq!(loaded.input.max_message_bytes, 1 << 20);
        assert_eq!(loaded.input.listen.len(), 1);
        assert_eq!(loaded.input.listen[0].to_string(), "127.0.0.1:0");
        assert_eq!(loaded.loki.batch_size, 4096);
        assert_eq!(loaded.loki.url.as_deref(), Some(url));
        assert_eq!(loaded.loki.labels.get("job").map(String::as_str), Some("docker"));
        assert_eq!(loaded.loki.labels.get("hostname"), None);
    }

    #[test]
    fn finds_the_listen_address_in_json_logs() {
        let line = concat!(
            r#"{"timestamp":"t","level":"INFO","#,
            r#""message":"accepting forward connections","listen":"127.0.0.1:4321"}"#
        );
        assert_eq!(listen_address(line), Some(Some("127.0.0.1:4321".parse().unwrap())));
        assert_eq!(listen_address(r#"{"message":"fwd2loki started"}"#), None);
        assert_eq!(listen_address("not json"), None);
    }
}
