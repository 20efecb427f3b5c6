//! Wiring the stages together: listeners → connections → batcher → pusher, and shutting them
//! down in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::buffer::MemoryBudget;
use crate::config::Config;
use crate::forward::connection::{ConnectionShared, EntryGroup};
use crate::forward::server::{BindError, Listener};
use crate::loki::batch::{Batch, Batcher};
use crate::loki::push::{ClientError, LokiClient};
use crate::loki::stdout::StdoutPrinter;
use crate::transform::Transform;

/// Batches waiting for the pusher. Memory is bounded by the budget, not by this count; a few
/// batches ahead keep the pusher busy while the next one is cut.
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
    Loki(Box<LokiClient>),
    Stdout(StdoutPrinter),
}

impl Sink {
    async fn deliver(&mut self, batch: &Batch, abort: &CancellationToken) -> bool {
        match self {
            Self::Loki(client) => client.deliver(batch, abort).await,
            Self::Stdout(printer) => match printer.print(batch).await {
                Ok(()) => true,
                Err(error) => {
                    error!(%error, entries = batch.entry_count(), "cannot write to stdout");
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
    /// Stops the listeners and connections.
    stop_input: CancellationToken,
    /// Makes the pusher give up on a batch it cannot deliver.
    abort_delivery: CancellationToken,
    listeners: TaskTracker,
    pusher: JoinHandle<()>,
    budget: MemoryBudget,
}

impl Pipeline {
    /// Binds every listener and starts all stages.
    ///
    /// # Errors
    ///
    /// [`StartError`] when a listener cannot be bound or the Loki client cannot be built;
    /// nothing has been started then.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let sink = match &config.loki.url {
            Some(_) => Sink::Loki(Box::new(LokiClient::new(&config.loki)?)),
            None => Sink::Stdout(StdoutPrinter::default()),
        };
        let mut listeners = Vec::new();
        for address in &config.input.listen {
            listeners.push(Listener::bind(address).await?);
        }
        let listen_addrs = listeners.iter().map(Listener::local_addr).collect();

        let budget = MemoryBudget::new(to_usize(config.buffer.max_bytes));
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
        });
        let tracker = TaskTracker::new();
        let connections = TaskTracker::new();
        for listener in listeners {
            tracker.spawn(listener.serve(Arc::clone(&shared), connections.clone()));
        }
        tracker.close();
        drop(shared);

        let batcher = Batcher::new(to_usize(config.loki.batch_size), config.loki.batch_wait);
        tokio::spawn(run_batcher(entry_rx, batch_tx, batcher));
        let pusher = tokio::spawn(run_pusher(batch_rx, sink, abort_delivery.clone()));

        Ok(Self {
            listen_addrs,
            stop_input,
            abort_delivery,
            listeners: tracker,
            pusher,
            budget,
        })
    }

    /// The bound addresses, in the order configured: `ip:port` or `unix:/path`.
    pub fn listen_addrs(&self) -> &[String] {
        &self.listen_addrs
    }

    /// Bytes of the memory budget in use.
    pub fn buffered_bytes(&self) -> usize {
        self.budget.used()
    }

    /// Stops accepting and reading, then delivers what was received. Returns true when
    /// everything was delivered within `timeout`, false when the rest was abandoned.
    pub async fn shutdown(self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.stop_input.cancel();
        self.listeners.wait().await;

        let mut pusher = self.pusher;
        let finished = tokio::time::timeout_at(deadline, &mut pusher).await.is_ok();
        if !finished {
            warn!(
                buffered_bytes = self.budget.used(),
                "shutdown timeout reached; undelivered entries are abandoned"
            );
            self.abort_delivery.cancel();
            let _ = pusher.await;
        }
        info!(delivered_all = finished, "pipeline stopped");
        finished
    }
}

/// What woke the batcher.
enum BatcherEvent {
    Entries(EntryGroup),
    Due,
    InputClosed,
}

/// Moves entries into batches and batches to the pusher, until every connection is gone.
async fn run_batcher(
    mut entries: mpsc::Receiver<EntryGroup>,
    batches: mpsc::Sender<Batch>,
    mut batcher: Batcher,
) {
    loop {
        let deadline = batcher.deadline();
        let event = tokio::select! {
            group = entries.recv() => group.map_or(BatcherEvent::InputClosed, BatcherEvent::Entries),
            () = sleep_until(deadline) => BatcherEvent::Due,
        };
        let ready = match event {
            BatcherEvent::Entries(group) => add_group(&mut batcher, group),
            BatcherEvent::Due => batcher.take().into_iter().collect(),
            BatcherEvent::InputClosed => break,
        };
        for batch in ready {
            if batches.send(batch).await.is_err() {
                return;
            }
        }
    }
    if let Some(batch) = batcher.take() {
        let _ = batches.send(batch).await;
    }
}

/// Adds a group's entries, each with its share of the group's memory charge; returns the
/// batches that filled up.
fn add_group(batcher: &mut Batcher, group: EntryGroup) -> Vec<Batch> {
    let EntryGroup {
        entries,
        mut charge,
    } = group;
    let now = Instant::now();
    let mut full = Vec::new();
    for entry in entries {
        let entry_charge = charge.split(entry.charged_bytes());
        full.extend(batcher.add(entry, entry_charge, now));
    }
    full
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Delivers batches one at a time, so a stream's entries reach Loki in order.
async fn run_pusher(mut batches: mpsc::Receiver<Batch>, mut sink: Sink, abort: CancellationToken) {
    while let Some(mut batch) = batches.recv().await {
        batch.sort();
        if !sink.deliver(&batch, &abort).await {
            error!(entries = batch.entry_count(), "batch abandoned at shutdown");
        }
    }
}

fn to_usize(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}
