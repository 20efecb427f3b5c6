//! Wiring the stages together: listeners → connections → batcher → pushers, and shutting them
//! down in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::buffer::MemoryBudget;
use crate::config::Config;
use crate::delivery::EntryGroup;
use crate::forward::connection::ConnectionShared;
use crate::forward::server::{BindError, Listener};
use crate::loki::batch::{Batch, Batcher};
use crate::loki::push::{ClientError, LokiClient};
use crate::loki::stdout::StdoutPrinter;
use crate::metrics::Metrics;
use crate::transform::Transform;

/// Batches cut but not yet taken by a pusher. Memory is bounded by the budget, not by this
/// count; a few batches ahead keep the pushers busy while the next one is cut.
const PUSH_QUEUE_BATCHES: usize = 4;
/// Entry groups waiting for the batcher.
const ENTRY_QUEUE_GROUPS: usize = 256;

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The Loki client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
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
        let listen_addrs = listeners.iter().map(Listener::local_addr).collect();

        let budget = MemoryBudget::with_gauge(
            to_usize(config.buffer.max_bytes),
            metrics.buffer_bytes.clone(),
        );
        let (entry_tx, entry_rx) = mpsc::channel(ENTRY_QUEUE_GROUPS);
        let (batch_tx, batch_rx) = mpsc::channel(PUSH_QUEUE_BATCHES);
        let stop_input = CancellationToken::new();
        let abort_delivery = CancellationToken::new();

        let shared = Arc::new(ConnectionShared {
            transform: Transform::new(&config.loki),
            entries: entry_tx,
            budget: budget.clone(),
            max_message_bytes: to_usize(config.input.max_message_bytes),
            max_decompressed_bytes: to_usize(config.input.max_decompressed_bytes),
            shutdown: stop_input.clone(),
            metrics: Arc::clone(&metrics),
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

        let batcher = Batcher::new(
            to_usize(config.loki.batch_size),
            config.loki.batch_wait,
            config.loki.ack_batch_wait,
        );
        let pushers = TaskTracker::new();
        pushers.spawn(run_batcher(
            entry_rx,
            batch_tx,
            batcher,
            Arc::clone(&metrics),
        ));
        let batch_rx = Arc::new(Mutex::new(batch_rx));
        for _ in 0..config.loki.max_concurrent_pushes {
            let worker = sink.clone_for_worker();
            pushers.spawn(run_pusher(
                Arc::clone(&batch_rx),
                worker,
                abort_delivery.clone(),
            ));
        }
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

    /// Stops accepting, reads what clients already sent, and delivers everything received.
    /// Returns true when all of it was delivered within `timeout`; otherwise what is left is
    /// abandoned (unacknowledged) and false is returned.
    pub async fn shutdown(self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.stop_input.cancel();
        self.listeners.wait().await;
        self.connections.close();

        let drained = async {
            self.connections.wait().await;
            self.pushers.wait().await;
        };
        let finished = tokio::time::timeout_at(deadline, drained).await.is_ok();
        if !finished {
            warn!(
                buffered_bytes = self.budget.used(),
                "shutdown timeout reached; undelivered entries are abandoned"
            );
            self.abort_delivery.cancel();
            self.pushers.wait().await;
        }
        info!(delivered_all = finished, "pipeline stopped");
        finished
    }
}

/// What woke the batcher.
enum BatcherWake {
    Entries(EntryGroup),
    Due,
    InputClosed,
}

/// Moves entries into batches and batches to the pushers, until every connection is gone.
async fn run_batcher(
    mut entries: mpsc::Receiver<EntryGroup>,
    batches: mpsc::Sender<Batch>,
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
            BatcherWake::Due => batcher.take().into_iter().collect(),
            BatcherWake::InputClosed => break,
        };
        metrics.streams_open.set(batcher.open_streams() as i64);
        for batch in ready {
            if batches.send(batch).await.is_err() {
                return;
            }
        }
    }
    if let Some(batch) = batcher.take() {
        let _ = batches.send(batch).await;
    }
    metrics.streams_open.set(0);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Delivers batches one at a time. With one pusher, a stream's entries reach Loki in order.
async fn run_pusher(
    batches: Arc<Mutex<mpsc::Receiver<Batch>>>,
    mut sink: Sink,
    abort: CancellationToken,
) {
    loop {
        let next = batches.lock().await.recv().await;
        let Some(mut batch) = next else {
            return;
        };
        batch.sort();
        let entries = batch.entry_count();
        if !sink.deliver(batch, &abort).await {
            error!(
                entries,
                "batch abandoned at shutdown; its requests are not acknowledged"
            );
        }
    }
}

fn to_usize(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}
