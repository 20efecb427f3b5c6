//! Appending entry groups to the current segment, syncing, and acknowledging.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use super::{Committed, DiskUsage, record, segment_path};
use crate::delivery::EntryGroup;

/// Most groups written together before one sync: many connections share the cost of a sync.
const GROUPS_PER_SYNC: usize = 256;

/// Writes groups to segment files. Runs on its own thread, since file writes and syncs block.
#[derive(Debug)]
pub(crate) struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    max_bytes: u64,
    usage: Arc<DiskUsage>,
    file: File,
    committed: Committed,
    progress: watch::Sender<Committed>,
}

impl Writer {
    /// A writer that starts segment `first_id` in `dir`.
    ///
    /// # Errors
    ///
    /// When the segment file cannot be created.
    pub(crate) fn new(
        dir: PathBuf,
        first_id: u64,
        segment_bytes: u64,
        max_bytes: u64,
        usage: Arc<DiskUsage>,
    ) -> io::Result<(Self, watch::Receiver<Committed>)> {
        let file = create_segment(&dir, first_id)?;
        let committed = Committed { segment: first_id, offset: 0, closed: false };
        let (progress, receiver) = watch::channel(committed);
        Ok((Self { dir, segment_bytes, max_bytes, usage, file, committed, progress }, receiver))
    }

    /// Writes every group that arrives until all senders are gone. Each group is dropped after
    /// it is synced, which releases its memory and sends the acks of its requests.
    pub(crate) fn run(mut self, mut groups: mpsc::Receiver<EntryGroup>) {
        let mut buffer = Vec::new();
        while let Some(first) = groups.blocking_recv() {
            let mut written = vec![first];
            while written.len() < GROUPS_PER_SYNC {
                match groups.try_recv() {
                    Ok(group) => written.push(group),
                    Err(_) => break,
                }
            }
            buffer.clear();
            for group in &written {
                if !group.entries.is_empty() {
                    record::encode(&group.entries, &mut buffer);
                }
            }
            if let Err(error) = self.append(&buffer) {
                // Without the disk the entries cannot be made safe: leave them unacknowledged
                // so clients send them again, and stop taking more.
                error!(%error, dir = %self.dir.display(), "disk buffer write failed; input stops");
                for group in &written {
                    group.tickets.iter().for_each(|ticket| ticket.abandon());
                }
                return;
            }
            drop(written);
        }
        self.committed.closed = true;
        self.progress.send_replace(self.committed);
        info!("disk buffer writer stopped");
    }

    /// Appends `bytes` and syncs, waiting for room first.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let len = bytes.len() as u64;
        self.wait_for_room(len)?;
        if self.committed.offset > 0 && self.committed.offset + len > self.segment_bytes {
            self.rotate()?;
        }
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        self.usage.add(len);
        self.committed.offset += len;
        self.progress.send_replace(self.committed);
        Ok(())
    }

    /// Blocks while the buffer is full. A full buffer makes connections wait in turn: TCP
    /// backpressure instead of loss.
    fn wait_for_room(&mut self, len: u64) -> io::Result<()> {
        let mut used = self.usage.lock();
        // A group larger than the whole buffer is let in when the buffer is empty, or it
        // could never be written.
        while *used > 0 && *used + len > self.max_bytes {
            if self.committed.offset > 0 {
                // Only sealed segments can be read to their end and deleted.
                drop(used);
                self.rotate()?;
                used = self.usage.lock();
                continue;
            }
            used = self.usage.freed.wait(used).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        Ok(())
    }

    /// Seals the current segment and starts the next.
    fn rotate(&mut self) -> io::Result<()> {
        let next = self.committed.segment + 1;
        self.file = create_segment(&self.dir, next)?;
        self.committed = Committed { segment: next, offset: 0, closed: false };
        self.progress.send_replace(self.committed);
        Ok(())
    }
}

fn create_segment(dir: &std::path::Path, id: u64) -> io::Result<File> {
    let file = OpenOptions::new().create_new(true).append(true).open(segment_path(dir, id))?;
    // The new file's name must survive a crash too.
    File::open(dir)?.sync_all()?;
    Ok(file)
}
