//! Reading segments back in order, following the writer, and handing the entries on.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::record::{self, Parsed};
use super::{Committed, DiskUsage, SegmentGuard, segment_path};
use crate::buffer::MemoryBudget;
use crate::delivery::{Completion, EntryGroup};
use crate::metrics::Metrics;
use crate::transform::Entry;

/// What the reader needs from the rest of the pipeline.
#[derive(Debug)]
pub(crate) struct ReaderContext {
    pub(crate) dir: PathBuf,
    pub(crate) usage: Arc<DiskUsage>,
    /// Memory for entries read back, until Loki has them.
    pub(crate) budget: MemoryBudget,
    pub(crate) entries: mpsc::Sender<EntryGroup>,
    /// Cancelled when delivery is given up at the shutdown deadline.
    pub(crate) abort: CancellationToken,
    pub(crate) metrics: Arc<Metrics>,
}

/// Reads every segment in order. Runs on its own thread, since file reads block.
#[derive(Debug)]
pub(crate) struct Reader {
    context: ReaderContext,
    progress: watch::Receiver<Committed>,
    /// Segments left by an earlier run, replayed before the writer's.
    replay: VecDeque<u64>,
    runtime: Handle,
    /// Label sets seen, so entries of one stream share them.
    streams: record::KnownStreams,
}

/// How reading one segment ended.
enum SegmentEnd {
    /// Read to its end; go on with this segment.
    Next(u64),
    /// The writer has stopped and everything was read, or delivery was given up.
    Stop,
}

impl Reader {
    /// A reader that replays the segments `replay`, then follows the writer.
    pub(crate) fn new(
        context: ReaderContext,
        progress: watch::Receiver<Committed>,
        replay: Vec<u64>,
        runtime: Handle,
    ) -> Self {
        Self { context, progress, replay: replay.into(), runtime, streams: Default::default() }
    }

    /// Reads until the writer stops and every segment has been read, or delivery is aborted.
    pub(crate) fn run(mut self) {
        if !self.replay.is_empty() {
            info!(segments = self.replay.len(), "replaying the disk buffer");
        }
        let mut id = self.replay.pop_front().unwrap_or_else(|| self.progress.borrow().segment);
        loop {
            match self.read_segment(id) {
                Ok(SegmentEnd::Next(next)) => id = next,
                Ok(SegmentEnd::Stop) => return,
                Err(error) => {
                    error!(%error, segment = id, "cannot read the disk buffer; delivery from disk stops");
                    return;
                }
            }
        }
    }

    fn read_segment(&mut self, id: u64) -> io::Result<SegmentEnd> {
        let path = segment_path(&self.context.dir, id);
        let guard = Arc::new(SegmentGuard::new(path.clone(), Arc::clone(&self.context.usage)));
        let mut file = File::open(&path)?;
        let mut read_to = 0u64;
        let mut unparsed = Vec::new();
        loop {
            let committed = *self.progress.borrow_and_update();
            let sealed = committed.segment > id || committed.closed;
            let end =
                if committed.segment == id { committed.offset } else { file.metadata()?.len() };
            if end > read_to {
                file.seek(SeekFrom::Start(read_to))?;
                (&mut file).take(end - read_to).read_to_end(&mut unparsed)?;
                read_to = end;
            }
            let Some(consumed) = self.hand_on_records(&unparsed, &guard) else {
                return Ok(self.stop(&guard));
            };
            unparsed.drain(..consumed);

            if sealed {
                // Nothing more will be written, so an incomplete record is damaged: a torn
                // last write, or a length field that no longer fits. Skip to the next record.
                while !unparsed.is_empty() {
                    let skip = record::next_magic(&unparsed);
                    warn!(segment = id, bytes = skip, "incomplete disk buffer record skipped");
                    self.context.metrics.disk_records_corrupt.inc();
                    unparsed.drain(..skip);
                    let Some(consumed) = self.hand_on_records(&unparsed, &guard) else {
                        return Ok(self.stop(&guard));
                    };
                    unparsed.drain(..consumed);
                }
                if committed.closed && committed.segment == id {
                    return Ok(SegmentEnd::Stop);
                }
                return Ok(SegmentEnd::Next(self.replay.pop_front().unwrap_or(id + 1)));
            }
            if !self.wait_for_writer() {
                return Ok(self.stop(&guard));
            }
        }
    }

    /// Hands on every complete record at the start of `bytes`. Returns the bytes used, or
    /// `None` when delivery was aborted.
    fn hand_on_records(&mut self, mut bytes: &[u8], guard: &Arc<SegmentGuard>) -> Option<usize> {
        let total = bytes.len();
        while !bytes.is_empty() {
            match record::parse(bytes, &mut self.streams) {
                Parsed::Record { entries, len } => {
                    self.hand_on(entries, guard)?;
                    bytes = &bytes[len..];
                }
                Parsed::Incomplete => break,
                Parsed::Corrupt { skip } => {
                    warn!(bytes = skip, "damaged disk buffer record skipped");
                    self.context.metrics.disk_records_corrupt.inc();
                    bytes = &bytes[skip..];
                }
            }
        }
        Some(total - bytes.len())
    }

    fn hand_on(&self, entries: Vec<Entry>, guard: &Arc<SegmentGuard>) -> Option<()> {
        let bytes = entries.iter().map(Entry::charged_bytes).sum();
        let budget = &self.context.budget;
        let abort = &self.context.abort;
        let charge = self.runtime.block_on(async {
            tokio::select! {
                charge = budget.reserve(bytes) => Some(charge),
                () = abort.cancelled() => None,
            }
        })?;
        let tickets: Vec<Arc<dyn Completion>> = vec![Arc::clone(guard) as Arc<dyn Completion>];
        self.context.entries.blocking_send(EntryGroup { entries, charge, tickets }).ok()
    }

    /// Waits until the writer commits more. False when delivery was aborted.
    fn wait_for_writer(&mut self) -> bool {
        let progress = &mut self.progress;
        let abort = &self.context.abort;
        self.runtime.block_on(async {
            tokio::select! {
                // A writer that is gone without closing has failed; what it wrote is read.
                changed = progress.changed() => changed.is_ok(),
                () = abort.cancelled() => false,
            }
        })
    }

    /// Stops reading a segment before its end: it stays on disk for the next start.
    fn stop(&self, guard: &Arc<SegmentGuard>) -> SegmentEnd {
        guard.abandon();
        SegmentEnd::Stop
    }
}
