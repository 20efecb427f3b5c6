//! The disk buffer: entries are written to append-only segment files before they are
//! acknowledged, read back in order for delivery, and deleted once Loki has them.
//!
//! ```text
//! connections ─▶ writer ─▶ segment files ─▶ reader ─▶ batcher ─▶ pushers
//!               (append,                   (follows     │
//!                fsync, ack)                the writer)  └─ a segment is deleted when every
//!                                                           batch holding its entries is done
//! ```
//!
//! Records are checksummed ([`record`]); on start the segments left by an earlier run are
//! replayed first. A torn last write or a damaged record is skipped with a log line and a
//! counter. Delivery is at least once: a segment whose entries were partly delivered before a
//! crash is replayed whole.

mod reader;
pub(crate) mod record;
mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use prometheus_client::metrics::gauge::Gauge;
use tracing::warn;

use crate::delivery::Completion;

pub(crate) use reader::{Reader, ReaderContext};
pub(crate) use writer::Writer;

/// The writer's progress: what the reader may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Committed {
    /// The segment being written.
    pub(crate) segment: u64,
    /// Bytes of it written and synced.
    pub(crate) offset: u64,
    /// True once the writer has stopped: nothing more will be written.
    pub(crate) closed: bool,
}

/// The path of segment `id` in `dir`.
fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// Ids of the segment files in `dir`, oldest first.
fn segment_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let id = name
            .to_str()
            .and_then(|name| name.strip_suffix(".seg"))
            .and_then(|id| id.parse::<u64>().ok());
        ids.extend(id);
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Bytes of segment files on disk, shared by the writer (which waits for room) and the
/// segment guards (which free it).
#[derive(Debug, Default)]
pub(crate) struct DiskUsage {
    bytes: Mutex<u64>,
    freed: Condvar,
    gauge: Gauge,
}

impl DiskUsage {
    fn new(bytes: u64, gauge: Gauge) -> Self {
        gauge.set(bytes as i64);
        Self { bytes: Mutex::new(bytes), freed: Condvar::new(), gauge }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.bytes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, bytes: u64) {
        let mut used = self.lock();
        *used += bytes;
        self.gauge.set(*used as i64);
    }

    fn remove(&self, bytes: u64) {
        let mut used = self.lock();
        *used = used.saturating_sub(bytes);
        self.gauge.set(*used as i64);
        self.freed.notify_all();
    }
}

/// Deletes its segment file when the last holder drops it, unless abandoned: then the
/// segment stays for the next start to replay.
#[derive(Debug)]
pub(crate) struct SegmentGuard {
    path: PathBuf,
    usage: Arc<DiskUsage>,
    abandoned: AtomicBool,
}

impl SegmentGuard {
    fn new(path: PathBuf, usage: Arc<DiskUsage>) -> Self {
        Self { path, usage, abandoned: AtomicBool::new(false) }
    }
}

impl Completion for SegmentGuard {
    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
    }
}

impl Drop for SegmentGuard {
    fn drop(&mut self) {
        if self.abandoned.load(Ordering::Acquire) {
            return;
        }
        let size = std::fs::metadata(&self.path).map(|metadata| metadata.len()).unwrap_or(0);
        match std::fs::remove_file(&self.path) {
            Ok(()) => self.usage.remove(size),
            Err(error) => {
                warn!(path = %self.path.display(), %error, "cannot delete a delivered segment")
            }
        }
    }
}

/// Opens the buffer directory: creates it if needed and measures the segments it holds.
///
/// # Errors
///
/// When the directory cannot be created or read.
pub(crate) fn open(dir: &Path, gauge: Gauge) -> io::Result<(Vec<u64>, Arc<DiskUsage>)> {
    std::fs::create_dir_all(dir)?;
    let ids = segment_ids(dir)?;
    let mut bytes = 0;
    for id in &ids {
        bytes += std::fs::metadata(segment_path(dir, *id))?.len();
    }
    Ok((ids, Arc::new(DiskUsage::new(bytes, gauge))))
}
