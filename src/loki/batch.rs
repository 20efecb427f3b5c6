//! Grouping entries into push-sized batches, one buffer per stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::buffer::MemoryCharge;
use crate::loki::labels::StreamLabels;
use crate::transform::Entry;

/// The entries of one stream within a batch.
#[derive(Debug)]
pub struct StreamEntries {
    /// The stream's labels.
    pub labels: Arc<StreamLabels>,
    /// Timestamp (ns since the epoch) and line of each entry, in arrival order until
    /// [`Batch::sort`] is called.
    pub entries: Vec<(i64, String)>,
}

/// Entries of one or more streams sent in one push.
#[derive(Debug)]
pub struct Batch {
    streams: Vec<StreamEntries>,
    /// Position of each stream in `streams`.
    index: HashMap<Arc<StreamLabels>, usize>,
    line_bytes: usize,
    entry_count: usize,
    /// When the first entry arrived; the batch is due `batch_wait` later.
    started: Instant,
    /// The memory the entries hold, returned when the batch is dropped.
    charge: MemoryCharge,
}

impl Batch {
    fn new(now: Instant) -> Self {
        Self {
            streams: Vec::new(),
            index: HashMap::new(),
            line_bytes: 0,
            entry_count: 0,
            started: now,
            charge: MemoryCharge::default(),
        }
    }

    fn push(&mut self, entry: Entry, charge: MemoryCharge) {
        self.line_bytes += entry.line.len();
        self.entry_count += 1;
        self.charge.merge(charge);
        let position = match self.index.get(&entry.stream) {
            Some(&position) => position,
            None => {
                self.streams.push(StreamEntries {
                    labels: Arc::clone(&entry.stream),
                    entries: Vec::new(),
                });
                self.index.insert(entry.stream, self.streams.len() - 1);
                self.streams.len() - 1
            }
        };
        self.streams[position]
            .entries
            .push((entry.timestamp_ns, entry.line));
    }

    /// Sorts each stream's entries by time. The sort is stable, so entries with equal
    /// timestamps keep their arrival order.
    pub fn sort(&mut self) {
        for stream in &mut self.streams {
            stream
                .entries
                .sort_by_key(|(timestamp_ns, _)| *timestamp_ns);
        }
    }

    /// The streams and their entries.
    pub fn streams(&self) -> &[StreamEntries] {
        &self.streams
    }

    /// Bytes of all lines.
    pub fn line_bytes(&self) -> usize {
        self.line_bytes
    }

    /// Number of entries.
    pub fn entry_count(&self) -> usize {
        self.entry_count
    }
}

/// Collects entries and cuts batches by size and age.
///
/// One batch collects every stream, as Loki's own clients do: a push carries many streams, and
/// a node with hundreds of containers sends one request per `batch_wait` rather than hundreds.
#[derive(Debug)]
pub struct Batcher {
    batch_size: usize,
    batch_wait: Duration,
    pending: Option<Batch>,
}

impl Batcher {
    /// A batcher that cuts at `batch_size` line bytes or `batch_wait` after the first entry.
    pub fn new(batch_size: usize, batch_wait: Duration) -> Self {
        Self {
            batch_size,
            batch_wait,
            pending: None,
        }
    }

    /// Adds an entry and the memory it holds. Returns the batch that was full, if adding the
    /// entry would have taken it over `batch_size`; the entry then starts the next batch.
    pub fn add(&mut self, entry: Entry, charge: MemoryCharge, now: Instant) -> Option<Batch> {
        let fits = |batch: &Batch| batch.line_bytes + entry.line.len() <= self.batch_size;
        let full = match &self.pending {
            Some(batch) if !fits(batch) => self.pending.take(),
            _ => None,
        };
        let batch = self.pending.get_or_insert_with(|| Batch::new(now));
        batch.push(entry, charge);
        full
    }

    /// When the pending batch is due, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending
            .as_ref()
            .map(|batch| batch.started + self.batch_wait)
    }

    /// Takes the pending batch, if any, due or not.
    pub fn take(&mut self) -> Option<Batch> {
        self.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: &Arc<StreamLabels>, timestamp_ns: i64, line: &str) -> Entry {
        Entry {
            stream: Arc::clone(stream),
            timestamp_ns,
            line: line.to_owned(),
        }
    }

    #[test]
    fn cuts_before_the_entry_that_would_exceed_the_size() {
        let stream = Arc::new(StreamLabels::new([("job", "a")]));
        let now = Instant::now();
        let mut batcher = Batcher::new(10, Duration::from_secs(1));
        assert!(
            batcher
                .add(entry(&stream, 1, "12345"), MemoryCharge::default(), now)
                .is_none()
        );
        assert!(
            batcher
                .add(entry(&stream, 2, "12345"), MemoryCharge::default(), now)
                .is_none()
        );
        let full = batcher
            .add(entry(&stream, 3, "1"), MemoryCharge::default(), now)
            .unwrap();
        assert_eq!((full.entry_count(), full.line_bytes()), (2, 10));
        let rest = batcher.take().unwrap();
        assert_eq!(rest.entry_count(), 1);
    }

    #[test]
    fn the_deadline_follows_the_first_entry() {
        let stream = Arc::new(StreamLabels::new([("job", "a")]));
        let start = Instant::now();
        let mut batcher = Batcher::new(1000, Duration::from_secs(1));
        assert_eq!(batcher.deadline(), None);
        batcher.add(entry(&stream, 1, "x"), MemoryCharge::default(), start);
        batcher.add(
            entry(&stream, 2, "y"),
            MemoryCharge::default(),
            start + Duration::from_millis(500),
        );
        assert_eq!(batcher.deadline(), Some(start + Duration::from_secs(1)));
    }

    #[test]
    fn groups_by_stream_and_sorts_stably_by_time() {
        let a = Arc::new(StreamLabels::new([("job", "a")]));
        let other_a = Arc::new(StreamLabels::new([("job", "a")]));
        let b = Arc::new(StreamLabels::new([("job", "b")]));
        let now = Instant::now();
        let mut batcher = Batcher::new(1000, Duration::from_secs(1));
        for (stream, timestamp_ns, line) in [
            (&a, 5, "a5"),
            (&b, 1, "b1"),
            (&other_a, 3, "a3"),
            (&a, 5, "a5-second"),
            (&a, 4, "a4"),
        ] {
            batcher.add(
                entry(stream, timestamp_ns, line),
                MemoryCharge::default(),
                now,
            );
        }
        let mut batch = batcher.take().unwrap();
        batch.sort();
        let lines: Vec<Vec<&str>> = batch
            .streams()
            .iter()
            .map(|stream| {
                stream
                    .entries
                    .iter()
                    .map(|(_, line)| line.as_str())
                    .collect()
            })
            .collect();
        assert_eq!(lines, [vec!["a3", "a4", "a5", "a5-second"], vec!["b1"]]);
    }
}
