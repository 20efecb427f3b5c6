//! Wiring the stages together: listeners → connections → batcher → pushers, and shutting them
//! down in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::buffer::MemoryBudget;
use crate::config::{BufferKind, Config, InputConfig};
use crate::delivery::EntryGroup;
use crate::disk;
use crate::forward::connection::ConnectionShared;
use crate::forward::handshake::HandshakeConfig;
use crate::forward::server::{BindError, Listener};
use crate::forward::tls::{self, TlsError};
use crate::log_limit::LogLimiter;
use crate::loki::batch::{Batch, Batcher};
use crate::loki::order::{ArrivalOrder, OrderCounters};
use crate::loki::push::{ClientError, LokiClient};
use crate::loki::stdout::StdoutPrinter;
use crate::metrics::Metrics;
use crate::secrets::{SecretError, read_secret_file, secret_from_env};
use crate::transform::Transform;

/// Batches cut but not yet taken by a lane's pusher. Memory is bounded by the budget, not by
/// this count; a couple of batches ahead keep the pusher busy while the next one is cut.
const PUSH_QUEUE_BATCHES: usize = 2;
/// Entry groups waiting for the batcher.
const ENTRY_QUEUE_GROUPS: usize = 256;
/// How often the same kind of connection error is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The Loki client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A secret file cannot be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The TLS settings cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The disk buffer's directory cannot be used.
    #[error("buffer.path: cannot use {path}: {source}")]
    Disk {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Everything received was delivered to Loki.
    Delivered,
    /// Loki did not take everything in time, but all of it is in the disk buffer.
    Persisted,
    /// Entries were left undelivered; their requests were not acknowledged.
    Abandoned,
}

/// Where batches go.
#[derive(Debug)]
enum Sink {
    Loki(LokiClient),
    Stdout(StdoutPrinter),
}

impl Sink {
    /// A sink for one more concurrent pusher.
    fn clone_for_worker(&self) -> Self {
        match self {
            Self::Loki(client) => Self::Loki(client.clone_for_worker()),
            Self::Stdout(_) => Self::Stdout(StdoutPrinter::default()),
        }
    }

    async fn deliver(&mut self, batch: Batch, abort: &CancellationToken) -> bool {
        match self {
            Self::Loki(client) => client.deliver(batch, abort).await,
            Self::Stdout(printer) => match printer.print(&batch).await {
                Ok(()) => true,
                Err(error) => {
                    error!(%error, entries = batch.entry_count(), "cannot write to stdout");
                    batch.abandon();
                    false
                }
            },
        }
    }
}

/// A running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    listen_addrs: Vec<String>,
    /// Stops the listeners; connections then read what was already sent and stop.
    stop_input: CancellationToken,
    /// Makes the pushers give up on batches they cannot deliver.
    abort_delivery: CancellationToken,
    listeners: TaskTracker,
    connections: TaskTracker,
    pushers: TaskTracker,
    budget: MemoryBudget,
    metrics: Arc<Metrics>,
    /// The disk buffer's writer thread, in disk mode.
    disk_writer: Option<std::thread::JoinHandle<()>>,
}

impl Pipeline {
    /// Binds every listener and starts all stages, with a fresh set of metrics.
    ///
    /// # Errors
    ///
    /// [`StartError`] when a listener cannot be bound or the Loki client cannot be built;
    /// nothing has been started then.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        Self::start_with_metrics(config, Arc::new(Metrics::new())).await
    }

    /// Like [`Pipeline::start`], counting into `metrics`.
    ///
    /// # Errors
    ///
    /// As [`Pipeline::start`].
    pub async fn start_with_metrics(
        config: &Config,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StartError> {
        let sink = match &config.loki.url {
            Some(_) => Sink::Loki(LokiClient::new(&config.loki, Arc::clone(&metrics))?),
            None => Sink::Stdout(StdoutPrinter::default()),
        };
        let mut listeners = Vec::new();
        for address in &config.input.listen {
            listeners.push(Listener::bind(address).await?);
        }
        let listen_addrs: Vec<String> = listeners.iter().map(Listener::local_addr).collect();
        for address in &listen_addrs {
            info!(listen = %address, "accepting forward connections");
        }

        let (entry_tx, entry_rx) = mpsc::channel(ENTRY_QUEUE_GROUPS);
        let stop_input = CancellationToken::new();
        let abort_delivery = CancellationToken::new();

        // In memory mode, connections hand entries straight to the batcher. In disk mode they
        // hand them to the disk writer, and a reader brings them back for the batcher; each
        // side then has its own memory budget.
        let (input_tx, input_budget, budget, disk_writer) = match config.buffer.kind {
            BufferKind::Memory => {
                let budget = MemoryBudget::with_gauge(
                    to_usize(config.buffer.max_bytes),
                    metrics.buffer_bytes.clone(),
                );
                (entry_tx, budget.clone(), budget, None)
            }
            BufferKind::Disk => {
                let memory = to_usize(config.buffer.memory_bytes);
                let budget = MemoryBudget::with_gauge(memory, metrics.buffer_bytes.clone());
                let context = disk::ReaderContext {
                    dir: config.buffer.path.clone().unwrap_or_default(),
                    usage: Arc::default(),
                    budget: budget.clone(),
                    entries: entry_tx,
                    abort: abort_delivery.clone(),
                    metrics: Arc::clone(&metrics),
                };
                let (disk_tx, writer) = start_disk_buffer(config, context)?;
                (disk_tx, MemoryBudget::new(memory), budget, Some(writer))
            }
        };

        let shared = Arc::new(ConnectionShared {
            transform: Transform::new(&config.loki)
                .count_overflow_in(metrics.stream_overflow_entries.clone()),
            entries: input_tx,
            budget: input_budget,
            max_message_bytes: to_usize(config.input.max_message_bytes),
            max_decompressed_bytes: to_usize(config.input.max_decompressed_bytes),
            shutdown: stop_input.clone(),
            metrics: Arc::clone(&metrics),
            handshake: handshake_config(&config.input)?,
            idle_timeout: config.input.idle_timeout,
            log_limiter: LogLimiter::new(LOG_INTERVAL),
            tls: tls_acceptor(&config.input)?,
            slots: Arc::new(Semaphore::new(config.input.max_connections)),
        });
        let listener_tasks = TaskTracker::new();
        let connections = TaskTracker::new();
        for listener in listeners {
            listener_tasks.spawn(listener.serve(Arc::clone(&shared), connections.clone()));
        }
        listener_tasks.close();
        // From here on only the listeners and connections hold the entry sender, so the
        // batcher sees the input close once they have all stopped.
        drop(shared);

        // Printing has no round trip to overlap, and one printer keeps the output unmixed.
        let lanes = match sink {
            Sink::Loki(_) => config.loki.max_concurrent_pushes,
            Sink::Stdout(_) => 1,
        };
        let mut batcher = Batcher::new(
            to_usize(config.loki.batch_size),
            config.loki.batch_wait,
            config.loki.ack_batch_wait,
        )
        .with_lanes(lanes);
        if config.loki.keep_arrival_order {
            let counters = OrderCounters {
                moved: metrics.timestamps_moved.clone(),
                out_of_order: metrics.timestamps_out_of_order.clone(),
            };
            batcher =
                batcher.with_arrival_order(ArrivalOrder::new(config.loki.order_window, counters));
        }
        // One pusher per lane, each with one push in flight: a stream keeps its lane, so its
        // entries reach Loki in order while the lanes push side by side.
        let pushers = TaskTracker::new();
        let mut lane_senders = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let (batch_tx, batch_rx) = mpsc::channel(PUSH_QUEUE_BATCHES);
            lane_senders.push(batch_tx);
            let worker = sink.clone_for_worker();
            pushers.spawn(run_pusher(batch_rx, worker, abort_delivery.clone()));
        }
        pushers.spawn(run_batcher(entry_rx, lane_senders, batcher, Arc::clone(&metrics)));
        pushers.close();

        Ok(Self {
            listen_addrs,
            stop_input,
            abort_delivery,
            listeners: listener_tasks,
            connections,
            pushers,
            budget,
            metrics,
            disk_writer,
        })
    }

    /// The bound addresses, in the order configured: `ip:port` or `unix:/path`.
    pub fn listen_addrs(&self) -> &[String] {
        &self.listen_addrs
    }

    /// The pipeline's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Bytes of the memory budget in use.
    pub fn buffered_bytes(&self) -> usize {
        self.budget.used()
    }

    /// Stops accepting, reads what clients already sent, and delivers everything received
    /// within `timeout`. What Loki has not taken by then is abandoned (its requests are not
    /// acknowledged) or, with the disk buffer, left on disk for the next start.
    pub async fn shutdown(self, timeout: Duration) -> ShutdownOutcome {
        let deadline = Instant::now() + timeout;
        self.stop_input.cancel();
        self.listeners.wait().await;
        self.connections.close();

        let drained = async {
            self.connections.wait().await;
            self.pushers.wait().await;
        };
        let delivered = tokio::time::timeout_at(deadline, drained).await.is_ok();
        if !delivered {
            warn!(buffered_bytes = self.budget.used(), "shutdown timeout reached; delivery stops");
            self.abort_delivery.cancel();
            self.pushers.wait().await;
        }
        let persisted = self.disk_writer.as_ref().is_some_and(|writer| writer.is_finished());
        let outcome = match (delivered, persisted) {
            (true, _) => ShutdownOutcome::Delivered,
            (false, true) => ShutdownOutcome::Persisted,
            (false, false) => ShutdownOutcome::Abandoned,
        };
        info!(?outcome, "pipeline stopped");
        outcome
    }
}

/// The forward handshake's settings, when a shared key is configured (in a file, or in
/// `FWD2LOKI_SHARED_KEY`).
fn handshake_config(input: &InputConfig) -> Result<Option<HandshakeConfig>, StartError> {
    let shared_key = match (&input.shared_key_file, secret_from_env("FWD2LOKI_SHARED_KEY")) {
        (_, Some(key)) => key,
        (Some(path), None) => read_secret_file("input.shared_key_file", path)?,
        (None, None) => return Ok(None),
    };
    let mut users = Vec::new();
    for user in &input.users {
        let password = read_secret_file("input.users.password_file", &user.password_file)?;
        users.push((user.username.clone(), password));
    }
    let self_hostname = input
        .self_hostname
        .clone()
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let timeout = input.idle_timeout;
    Ok(Some(HandshakeConfig { shared_key, self_hostname, users, timeout }))
}

fn tls_acceptor(input: &InputConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, StartError> {
    let Some(tls) = &input.tls else {
        return Ok(None);
    };
    Ok(Some(tls::acceptor(&tls.cert_file, &tls.key_file, tls.client_ca_file.as_deref())?))
}

/// Opens the disk buffer and starts its writer and reader threads. Returns the writer's input
/// and its thread.
fn start_disk_buffer(
    config: &Config,
    mut context: disk::ReaderContext,
) -> Result<(mpsc::Sender<EntryGroup>, std::thread::JoinHandle<()>), StartError> {
    let dir = context.dir.clone();
    let disk_error = |source| StartError::Disk { path: dir.display().to_string(), source };
    let (replay, usage) =
        disk::open(&dir, context.metrics.disk_buffer_bytes.clone()).map_err(disk_error)?;
    context.usage = Arc::clone(&usage);

    let max_bytes = config.buffer.max_bytes;
    // Several segments fit in the buffer, so delivered ones can be deleted while it fills.
    let segment_bytes = (max_bytes / 8).clamp(64 << 10, 64 << 20);
    let first_id = replay.last().map_or(0, |id| id + 1);
    let (writer, progress) =
        disk::Writer::new(dir.clone(), first_id, segment_bytes, max_bytes, usage)
            .map_err(disk_error)?;
    let reader = disk::Reader::new(context, progress, replay, tokio::runtime::Handle::current());

    let (disk_tx, disk_rx) = mpsc::channel(ENTRY_QUEUE_GROUPS);
    let spawn_error = |source| StartError::Disk { path: dir.display().to_string(), source };
    let writer = std::thread::Builder::new()
        .name("disk-writer".into())
        .spawn(move || writer.run(disk_rx))
        .map_err(spawn_error)?;
    std::thread::Builder::new()
        .name("disk-reader".into())
        .spawn(move || reader.run())
        .map_err(spawn_error)?;
    Ok((disk_tx, writer))
}

/// What woke the batcher.
enum BatcherWake {
    Entries(EntryGroup),
    Due,
    InputClosed,
}

/// Moves entries into batches and batches to their lanes' pushers, until every connection is
/// gone.
async fn run_batcher(
    mut entries: mpsc::Receiver<EntryGroup>,
    lanes: Vec<mpsc::Sender<Batch>>,
    mut batcher: Batcher,
    metrics: Arc<Metrics>,
) {
    loop {
        let deadline = batcher.deadline();
        let wake = tokio::select! {
            group = entries.recv() => group.map_or(BatcherWake::InputClosed, BatcherWake::Entries),
            () = sleep_until(deadline) => BatcherWake::Due,
        };
        let ready = match wake {
            BatcherWake::Entries(group) => batcher.add_group(group, Instant::now()),
            BatcherWake::Due => batcher.take_due(Instant::now()),
            BatcherWake::InputClosed => break,
        };
        metrics.streams_open.set(batcher.open_streams() as i64);
        for batch in ready {
            if lanes[batch.lane()].send(batch).await.is_err() {
                return;
            }
        }
    }
    while let Some(batch) = batcher.take() {
        if lanes[batch.lane()].send(batch).await.is_err() {
            break;
        }
    }
    metrics.streams_open.set(0);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Delivers one lane's batches one at a time, so that its streams' entries reach Loki in order.
async fn run_pusher(mut batches: mpsc::Receiver<Batch>, mut sink: Sink, abort: CancellationToken) {
    while let Some(mut batch) = batches.recv().await {
        batch.sort();
        let entries = batch.entry_count();
        if !sink.deliver(batch, &abort).await {
            error!(entries, "batch abandoned at shutdown; its requests are not acknowledged");
        }
    }
}

fn to_usize(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}
