//! Keeping the arrival order of a stream's entries where their timestamps do not tell it.
//!
//! Loki orders a stream's entries by timestamp alone, and returns entries of equal timestamps
//! in no particular order. Docker without `fluentd-sub-second-precision` stamps every line of a
//! second with the same time, so a burst of lines would come back shuffled. [`ArrivalOrder`]
//! therefore moves an entry that is not after the previous entry of its stream to 1 ns after
//! it, so that timestamps increase strictly in arrival order.
//!
//! The move is bounded by a window: an entry older than the previous one by more than the
//! window keeps its own time (and is counted), since its timestamp then says more than its
//! place in the arrival order. It runs where entries enter the batcher, once per entry in
//! arrival order, so that it spans batches and applies after the disk buffer too.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use crate::loki::labels::StreamLabels;
use crate::transform::Entry;

/// Streams remembered per generation. When the current generation is full it becomes the
/// previous one and the one before is forgotten, so the memory stays bounded while streams
/// that are still active keep their place. Loki's default limit is 5,000 streams per tenant.
const STREAMS_PER_GENERATION: usize = 8192;

/// What [`ArrivalOrder::apply`] did to an entry's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reordered {
    /// The entry was after the previous one of its stream, or the first.
    Kept,
    /// The entry was moved to 1 ns after the previous one.
    Moved,
    /// The entry was older than the previous one by more than the window and kept its time.
    OutOfOrder,
}

/// The counters of what [`ArrivalOrder`] does.
#[derive(Debug, Clone, Default)]
pub struct OrderCounters {
    /// Entries moved after the previous entry of their stream.
    pub moved: Counter,
    /// Entries older than the window that kept their time.
    pub out_of_order: Counter,
}

/// The last timestamp of each stream. The batcher task looks up every entry here, so the
/// streams' precomputed hashes are used as they are.
type LastTimestamps = HashMap<LokiStream, i64, BuildHasherDefault<PrecomputedHash>>;

/// The last timestamp of every recent stream.
#[derive(Debug)]
pub struct ArrivalOrder {
    window_ns: i64,
    current: LastTimestamps,
    previous: LastTimestamps,
    counters: OrderCounters,
}

impl ArrivalOrder {
    /// Moves entries by up to `window` to keep their arrival order, counting into `counters`.
    pub fn new(window: Duration, counters: OrderCounters) -> Self {
        let window_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
        Self { window_ns, current: HashMap::default(), previous: HashMap::default(), counters }
    }

    /// Gives `entry` a timestamp after the previous entry of its stream, if it is not after it
    /// already and within the window.
    pub fn apply(&mut self, entry: &mut Entry) -> Reordered {
        let stream = LokiStream(Arc::clone(&entry.stream));
        if self.current.len() >= STREAMS_PER_GENERATION && !self.current.contains_key(&stream) {
            self.previous = std::mem::take(&mut self.current);
        }
        let last = match self.current.entry(stream) {
            MapEntry::Occupied(known) => known.into_mut(),
            MapEntry::Vacant(new) => match self.previous.remove(new.key()) {
                Some(last) => new.insert(last),
                None => {
                    new.insert(entry.timestamp_ns);
                    return Reordered::Kept;
                }
            },
        };
        if entry.timestamp_ns > *last {
            *last = entry.timestamp_ns;
            Reordered::Kept
        } else if last.saturating_sub(entry.timestamp_ns) <= self.window_ns {
            *last = last.saturating_add(1);
            entry.timestamp_ns = *last;
            self.counters.moved.inc();
            Reordered::Moved
        } else {
            // The stream's last timestamp stays: entries after this one are still ordered
            // after the newer entries already sent.
            self.counters.out_of_order.inc();
            Reordered::OutOfOrder
        }
    }
}

/// A stream as Loki identifies it: tenant and labels, whatever the structured metadata.
#[derive(Debug, Clone)]
struct LokiStream(Arc<StreamLabels>);

impl PartialEq for LokiStream {
    fn eq(&self, other: &Self) -> bool {
        self.0.same_loki_stream(&other.0)
    }
}

impl Eq for LokiStream {}

impl Hash for LokiStream {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash_loki_stream(state);
    }
}

/// A hasher for keys that hash themselves as one `u64` that is already a good hash, such as
/// [`LokiStream`]: it passes that value through.
#[derive(Debug, Default)]
struct PrecomputedHash(u64);

impl Hasher for PrecomputedHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `LokiStream`; mixes anyway, so that any key still works.
        for &byte in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::Line;

    const SECOND: i64 = 1_000_000_000;

    fn entry(stream: &Arc<StreamLabels>, timestamp_ns: i64) -> Entry {
        Entry { stream: Arc::clone(stream), timestamp_ns, line: Line::default() }
    }

    fn order() -> ArrivalOrder {
        ArrivalOrder::new(Duration::from_secs(1), OrderCounters::default())
    }

    #[test]
    fn equal_timestamps_become_strictly_increasing() {
        let stream = Arc::new(StreamLabels::new([("job", "a")]));
        let mut order = order();
        let times: Vec<i64> = (0..4)
            .map(|_| {
                let mut entry = entry(&stream, 100 * SECOND);
                order.apply(&mut entry);
                entry.timestamp_ns
            })
            .collect();
        assert_eq!(times, [100 * SECOND, 100 * SECOND + 1, 100 * SECOND + 2, 100 * SECOND + 3]);
        assert_eq!(order.counters.moved.get(), 3);
    }

    #[test]
    fn later_entries_keep_their_time_and_older_ones_move_only_within_the_window() {
        let stream = Arc::new(StreamLabels::new([("job", "a")]));
        let mut order = order();
        let mut apply = |timestamp_ns| {
            let mut entry = entry(&stream, timestamp_ns);
            (order.apply(&mut entry), entry.timestamp_ns)
        };
        assert_eq!(apply(10 * SECOND), (Reordered::Kept, 10 * SECOND));
        assert_eq!(apply(11 * SECOND), (Reordered::Kept, 11 * SECOND));
        assert_eq!(apply(10 * SECOND), (Reordered::Moved, 11 * SECOND + 1));
        assert_eq!(apply(5 * SECOND), (Reordered::OutOfOrder, 5 * SECOND));
        // The outlier did not reset the stream: the next equal time still goes after.
        assert_eq!(apply(11 * SECOND), (Reordered::Moved, 11 * SECOND + 2));
        assert_eq!(order.counters.out_of_order.get(), 1);
    }

    #[test]
    fn streams_and_tenants_are_ordered_apart_but_structured_metadata_is_one_stream() {
        let labels = StreamLabels::new([("job", "a")]);
        let stdout = Arc::new(labels.clone().with_structured_metadata([("source", "stdout")]));
        let stderr = Arc::new(labels.clone().with_structured_metadata([("source", "stderr")]));
        let other_tenant = Arc::new(labels.with_tenant(Some("b".into())));
        let mut order = order();
        let mut time_of = |stream| {
            let mut entry = entry(stream, SECOND);
            order.apply(&mut entry);
            entry.timestamp_ns
        };
        assert_eq!(time_of(&stdout), SECOND);
        assert_eq!(time_of(&stderr), SECOND + 1, "same Loki stream");
        assert_eq!(time_of(&other_tenant), SECOND, "another tenant's stream");
    }

    #[test]
    fn memory_is_bounded_and_active_streams_are_remembered() {
        let mut order = order();
        let active = Arc::new(StreamLabels::new([("job", "active")]));
        for index in 0..3 * STREAMS_PER_GENERATION {
            let stream = Arc::new(StreamLabels::new([("job", index.to_string())]));
            order.apply(&mut entry(&stream, SECOND));
            order.apply(&mut entry(&active, SECOND));
        }
        assert!(order.current.len() + order.previous.len() <= 2 * STREAMS_PER_GENERATION);
        let mut last = entry(&active, SECOND);
        order.apply(&mut last);
        assert_eq!(last.timestamp_ns, SECOND + 3 * STREAMS_PER_GENERATION as i64);
    }
}
