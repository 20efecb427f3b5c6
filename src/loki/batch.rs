//! Grouping entries into push-sized batches, one per tenant, one buffer per stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::buffer::MemoryCharge;
use crate::delivery::{Completion, EntryGroup};
use crate::loki::labels::StreamLabels;
use crate::loki::order::ArrivalOrder;
use crate::transform::{Entry, Line};

/// The entries of one stream within a batch.
#[derive(Debug)]
pub struct StreamEntries {
    /// The stream's labels, with the structured metadata of its entries.
    pub labels: Arc<StreamLabels>,
    /// Timestamp (ns since the epoch) and line of each entry, in arrival order until
    /// [`Batch::sort`] is called.
    pub entries: Vec<(i64, Line)>,
}

/// Entries of one or more streams of one tenant and push lane, sent in one push.
#[derive(Debug)]
pub struct Batch {
    /// The tenant taken from the records; `None` is the configured `tenant_id`, or none.
    tenant: Option<Arc<str>>,
    /// The push lane of every stream in the batch, see [`StreamLabels::lane`].
    lane: usize,
    streams: Vec<StreamEntries>,
    /// Position of each stream in `streams`.
    index: HashMap<Arc<StreamLabels>, usize>,
    line_bytes: usize,
    /// Line and structured metadata bytes, which Loki counts and `batch_size` limits.
    size_bytes: usize,
    entry_count: usize,
    /// The number of the last entry group that added entries, to find the batches that hold
    /// entries of a group.
    last_group: u64,
    /// When the first entry arrived; the batch is due `batch_wait` later.
    started: Instant,
    /// The memory the entries hold, returned when the batch is dropped.
    charge: MemoryCharge,
    /// Tickets of requests with entries in this batch: their acks wait for it.
    tickets: Vec<Arc<dyn Completion>>,
}

impl Batch {
    fn new(now: Instant, tenant: Option<Arc<str>>, lane: usize) -> Self {
        Self {
            tenant,
            lane,
            streams: Vec::new(),
            index: HashMap::new(),
            line_bytes: 0,
            size_bytes: 0,
            entry_count: 0,
            last_group: 0,
            started: now,
            charge: MemoryCharge::default(),
            tickets: Vec::new(),
        }
    }

    /// Whether a client waits for this batch to be delivered before it sends more.
    fn has_waiting_clients(&self) -> bool {
        !self.tickets.is_empty()
    }

    fn add_tickets(&mut self, tickets: &[Arc<dyn Completion>]) {
        for ticket in tickets {
            let held_already = self
                .tickets
                .iter()
                .any(|held| std::ptr::addr_eq(Arc::as_ptr(held), Arc::as_ptr(ticket)));
            if !held_already {
                self.tickets.push(Arc::clone(ticket));
            }
        }
    }

    /// Adds the entry, with `charged_bytes` of `charge` for the memory it holds.
    fn push(&mut self, entry: Entry, charge: &mut MemoryCharge, charged_bytes: usize) {
        self.line_bytes += entry.line.len();
        self.size_bytes += size_of(&entry);
        self.entry_count += 1;
        self.charge.take_from(charge, charged_bytes);
        // Consecutive entries nearly always share a stream (one container per connection):
        // a pointer comparison saves hashing the label string.
        let same_as_last =
            self.streams.last().is_some_and(|last| Arc::ptr_eq(&last.labels, &entry.stream));
        let position = if same_as_last {
            self.streams.len() - 1
        } else if let Some(&position) = self.index.get(&entry.stream) {
            position
        } else {
            self.streams
                .push(StreamEntries { labels: Arc::clone(&entry.stream), entries: Vec::new() });
            self.index.insert(Arc::clone(&entry.stream), self.streams.len() - 1);
            self.streams.len() - 1
        };
        self.streams[position].entries.push((entry.timestamp_ns, entry.line));
    }

    /// Sorts each stream's entries by time. The sort is stable, so entries with equal
    /// timestamps keep their arrival order.
    pub fn sort(&mut self) {
        for stream in &mut self.streams {
            stream.entries.sort_by_key(|(timestamp_ns, _)| *timestamp_ns);
        }
    }

    /// The streams and their entries.
    pub fn streams(&self) -> &[StreamEntries] {
        &self.streams
    }

    /// The tenant taken from the records, sent as `X-Scope-OrgID`; `None` means the configured
    /// `tenant_id`, or none.
    pub fn tenant(&self) -> Option<&Arc<str>> {
        self.tenant.as_ref()
    }

    /// The push lane that must carry the batch, so that its streams stay in order.
    pub fn lane(&self) -> usize {
        self.lane
    }

    /// Bytes of all lines.
    pub fn line_bytes(&self) -> usize {
        self.line_bytes
    }

    /// Number of entries.
    pub fn entry_count(&self) -> usize {
        self.entry_count
    }

    /// Marks the batch as given up: the requests it holds entries of will not be acknowledged.
    pub fn abandon(&self) {
        for ticket in &self.tickets {
            ticket.abandon();
        }
    }

    /// Splits the batch into two of about half the entries each, for a Loki that found the
    /// request too large. Returns `None` for a batch of one entry, which cannot be split.
    pub fn split_in_half(self) -> Option<(Batch, Batch)> {
        if self.entry_count < 2 {
            return None;
        }
        let Batch { tenant, lane, streams, started, mut charge, tickets, .. } = self;
        let mut first = Batch::new(started, tenant.clone(), lane);
        let mut second = Batch::new(started, tenant, lane);
        let half = streams.iter().map(|stream| stream.entries.len()).sum::<usize>() / 2;
        let mut moved = 0;
        for stream in streams {
            for (timestamp_ns, line) in stream.entries {
                let target = if moved < half { &mut first } else { &mut second };
                let entry = Entry { stream: Arc::clone(&stream.labels), timestamp_ns, line };
                target.push(entry, &mut MemoryCharge::default(), 0);
                moved += 1;
            }
        }
        let half_charge = charge.bytes() / 2;
        first.charge.take_from(&mut charge, half_charge);
        second.charge.take_from(&mut charge, usize::MAX);
        first.add_tickets(&tickets);
        second.add_tickets(&tickets);
        Some((first, second))
    }
}

/// Bytes an entry adds to a batch's size: its line and structured metadata.
fn size_of(entry: &Entry) -> usize {
    entry.line.len() + entry.stream.structured_metadata_bytes()
}

/// Collects entries and cuts batches by size and age.
///
/// One batch per tenant and push lane collects every stream of the tenant in that lane: a push
/// carries many streams, so a node with hundreds of containers sends one request per lane and
/// `batch_wait` rather than hundreds. A push names one tenant, so tenants never share a batch;
/// a stream always takes the same lane, and each lane has one push in flight, so a stream's
/// entries reach Loki in order while the lanes push side by side.
#[derive(Debug)]
pub struct Batcher {
    batch_size: usize,
    batch_wait: Duration,
    /// The shorter wait of a batch that a client waits for (a forward ack), because such a
    /// client sends nothing more until then.
    ack_batch_wait: Duration,
    /// The number of push lanes streams are spread over.
    lanes: usize,
    /// The batches being filled, at most one per tenant and lane.
    pending: Vec<Batch>,
    /// Moves entries of equal timestamps apart in arrival order, when enabled.
    order: Option<ArrivalOrder>,
    /// The number of entry groups added so far.
    group_count: u64,
}

impl Batcher {
    /// A batcher that cuts at `batch_size` line bytes, or `batch_wait` after the first entry
    /// (`ack_batch_wait` when a client waits for an ack of an entry in the batch).
    pub fn new(batch_size: usize, batch_wait: Duration, ack_batch_wait: Duration) -> Self {
        Self {
            batch_size,
            batch_wait,
            ack_batch_wait,
            lanes: 1,
            pending: Vec::new(),
            order: None,
            group_count: 0,
        }
    }

    /// The same batcher, spreading streams over `lanes` push lanes (at least one).
    pub fn with_lanes(self, lanes: usize) -> Self {
        Self { lanes: lanes.max(1), ..self }
    }

    /// The same batcher, keeping the arrival order of each stream's entries with `order` as
    /// they are added.
    pub fn with_arrival_order(self, order: ArrivalOrder) -> Self {
        Self { order: Some(order), ..self }
    }

    /// Adds an entry and the memory it holds to the batch of its tenant and lane. Returns that
    /// batch if adding the entry would have taken it over `batch_size`; the entry then starts
    /// the next.
    pub fn add(&mut self, entry: Entry, mut charge: MemoryCharge, now: Instant) -> Option<Batch> {
        let bytes = charge.bytes();
        self.add_charged(entry, &mut charge, bytes, now)
    }

    /// As [`Self::add`], with `charged_bytes` of `charge` for the memory the entry holds.
    fn add_charged(
        &mut self,
        mut entry: Entry,
        charge: &mut MemoryCharge,
        charged_bytes: usize,
        now: Instant,
    ) -> Option<Batch> {
        if let Some(order) = &mut self.order {
            order.apply(&mut entry);
        }
        let tenant = entry.stream.tenant();
        let lane = entry.stream.lane(self.lanes);
        let position = match self
            .pending
            .iter()
            .position(|batch| batch.lane == lane && batch.tenant.as_ref() == tenant)
        {
            Some(position) => position,
            None => {
                self.pending.push(Batch::new(now, tenant.cloned(), lane));
                self.pending.len() - 1
            }
        };
        let batch = &mut self.pending[position];
        let full = if batch.entry_count > 0 && batch.size_bytes + size_of(&entry) > self.batch_size
        {
            let next = Batch::new(now, batch.tenant.clone(), lane);
            Some(std::mem::replace(batch, next))
        } else {
            None
        };
        batch.last_group = self.group_count;
        batch.push(entry, charge, charged_bytes);
        full
    }

    /// Adds a connection's group of entries, each with its share of the group's memory, and
    /// ties the group's tickets to every batch that receives its entries. Returns the batches
    /// that filled up.
    pub fn add_group(&mut self, group: EntryGroup, now: Instant) -> Vec<Batch> {
        let EntryGroup { entries, mut charge, tickets } = group;
        self.group_count += 1;
        let mut full = Vec::new();
        for entry in entries {
            let charged_bytes = entry.charged_bytes();
            if let Some(mut batch) = self.add_charged(entry, &mut charge, charged_bytes, now) {
                batch.add_tickets(&tickets);
                full.push(batch);
            }
        }
        // A request whose events were all filtered out (or held back, as parts of a split
        // line) has nothing to wait for: its tickets drop here and its acks go out.
        for batch in &mut self.pending {
            if batch.last_group == self.group_count {
                batch.add_tickets(&tickets);
            }
        }
        full
    }

    /// The number of streams in the batches being filled.
    pub fn open_streams(&self) -> usize {
        self.pending.iter().map(|batch| batch.streams.len()).sum()
    }

    /// When the first pending batch is due, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|batch| self.deadline_of(batch)).min()
    }

    fn deadline_of(&self, batch: &Batch) -> Instant {
        let wait = if batch.has_waiting_clients() {
            self.ack_batch_wait.min(self.batch_wait)
        } else {
            self.batch_wait
        };
        batch.started + wait
    }

    /// Takes the pending batch that is due first, if any, due or not.
    pub fn take(&mut self) -> Option<Batch> {
        let first =
            (0..self.pending.len()).min_by_key(|&index| self.deadline_of(&self.pending[index]))?;
        Some(self.pending.swap_remove(first))
    }

    /// Takes every pending batch that is due at `now`, the first due first.
    pub fn take_due(&mut self, now: Instant) -> Vec<Batch> {
        let mut due = Vec::new();
        while self.deadline().is_some_and(|deadline| deadline <= now) {
            due.extend(self.take());
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::DeliveryTicket;

    fn entry(stream: &Arc<StreamLabels>, timestamp_ns: i64, line: &str) -> Entry {
        Entry { stream: Arc::clone(stream), timestamp_ns, line: line.into() }
    }

    fn lines(batch: &Batch) -> Vec<Vec<&str>> {
        fn stream_lines(stream: &StreamEntries) -> Vec<&str> {
            stream.entries.iter().map(|(_, line)| line.as_str()).collect()
        }
        batch.streams().iter().map(stream_lines).collect()
    }

    #[test]
    fn tenants_never_share_a_batch() {
        let labels = StreamLabels::new([("job", "a")]);
        let a = Arc::new(labels.clone().with_tenant(Some("a".into())));
        let b = Arc::new(labels.clone().with_tenant(Some("b".into())));
        let default = Arc::new(labels);
        let start = Instant::now();
        let mut batcher = Batcher::new(1000, Duration::from_secs(1), Duration::ZERO);
        let (ticket, mut acked) = DeliveryTicket::new();
        let entries = vec![
            entry(&a, 1, "a1"),
            entry(&default, 2, "d"),
            entry(&b, 3, "b"),
            entry(&a, 4, "a2"),
        ];
        batcher.add_group(
            EntryGroup { entries, tickets: vec![ticket], ..EntryGroup::default() },
            start,
        );
        assert_eq!(batcher.open_streams(), 3);

        let mut batches = batcher.take_due(start + Duration::from_secs(1));
        assert!(batcher.take().is_none());
        batches.sort_by_key(|batch| batch.tenant().cloned());
        let tenants: Vec<Option<&str>> =
            batches.iter().map(|batch| batch.tenant().map(|t| &**t)).collect();
        assert_eq!(tenants, [None, Some("a"), Some("b")]);
        assert_eq!(lines(&batches[1]), [vec!["a1", "a2"]]);
        drop(batches.pop());
        assert!(
            acked.try_recv().is_err(),
            "every batch with the request's entries holds its ticket"
        );
        drop(batches);
        assert_eq!(acked.try_recv(), Ok(()));
    }

    #[test]
    fn each_lane_gets_its_own_batches_and_a_stream_always_the_same_lane() {
        let streams: Vec<Arc<StreamLabels>> = (0..16)
            .map(|n| Arc::new(StreamLabels::new([("container_name", format!("/app-{n}"))])))
            .collect();
        let start = Instant::now();
        let mut batcher = Batcher::new(1000, Duration::from_secs(1), Duration::ZERO).with_lanes(3);
        for (n, stream) in streams.iter().cycle().take(64).enumerate() {
            batcher.add(entry(stream, n as i64, "x"), MemoryCharge::default(), start);
        }
        let mut batches = Vec::new();
        while let Some(batch) = batcher.take() {
            batches.push(batch);
        }
        let mut lanes: Vec<usize> = batches.iter().map(Batch::lane).collect();
        lanes.sort_unstable();
        assert_eq!(lanes, [0, 1, 2], "one batch per lane, every lane used by 16 streams");
        for batch in &batches {
            for stream in batch.streams() {
                assert_eq!(stream.labels.lane(3), batch.lane());
                assert_eq!(stream.entries.len(), 4, "all of a stream's entries in its lane");
            }
        }
    }

    #[test]
    fn only_due_batches_are_taken() {
        let a = Arc::new(StreamLabels::new([("job", "a")]).with_tenant(Some("a".into())));
        let b = Arc::new(StreamLabels::new([("job", "a")]));
        let start = Instant::now();
        let mut batcher = Batcher::new(1000, Duration::from_secs(1), Duration::ZERO);
        batcher.add(entry(&a, 1, "a"), MemoryCharge::default(), start);
        batcher.add(entry(&b, 1, "b"), MemoryCharge::default(), start + Duration::from_millis(500));
        assert_eq!(batcher.deadline(), Some(start + Duration::from_secs(1)));
        let due = batcher.take_due(start + Duration::from_secs(1));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].tenant().map(|tenant| &**tenant), Some("a"));
        assert_eq!(batcher.deadline(), Some(start + Duration::from_millis(1500)));
    }

    #[test]
    fn arrival_order_is_kept_across_batches() {
        use crate::loki::order::OrderCounters;

        let stream = Arc::new(StreamLabels::new([("job", "a")]));
        let now = Instant::now();
        let order = ArrivalOrder::new(Duration::from_secs(1), OrderCounters::default());
        let mut batcher =
            Batcher::new(2, Duration::from_secs(1), Duration::ZERO).with_arrival_order(order);
        let mut batches = Vec::new();
        for line in ["a", "b", "c", "d"] {
            batches.extend(batcher.add(entry(&stream, 7, line), MemoryCharge::default(), now));
        }
        batches.extend(batcher.take());
        let times: Vec<i64> = batches
            .iter_mut()
            .flat_map(|batch| {
                batch.sort();
                batch.streams()[0]
                    .entries
                    .iter()
                    .map(|(timestamp_ns, _)| *timestamp_ns)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(times, [7, 8, 9, 10]);
    }

    #[test]
    fn structured_metadata_counts_toward_the_batch_size() {
        let stream =
            Arc::new(StreamLabels::new([("job", "a")]).with_structured_metadata([("id", "12345")]));
        let now = Instant::now();
        let mut batcher = Batcher::new(10, Duration::from_secs(1), Duration::ZERO);
        assert!(batcher.add(entry(&stream, 1, "abc"), MemoryCharge::default(), now).is_none());
        let full = batcher.add(entry(&stream, 2, "abc"), MemoryCharge::default(), now);
        assert_eq!(full.map(|batch| (batch.entry_count(), batch.line_bytes())), Some((1, 3)));
    }

    #[test]
    fn cuts_before_the_entry_that_would_exceed_the_size() {
        let stream = Arc::new(StreamLabels::new([("job", "a")]));
        let now = Instant::now();
        let mut batcher = Batcher::new(10, Duration::from_secs(1), Duration::ZERO);
        assert!(batcher.add(entry(&stream, 1, "12345"), MemoryCharge::default(), now).is_none());
        assert!(batcher.add(entry(&stream, 2, "12345"), MemoryCharge::default(), now).is_none());
        let full = batcher.add(entry(&stream, 3, "1"), MemoryCharge::default(), now).unwrap();
        assert_eq!((full.entry_count(), full.line_bytes()), (2, 10));
        let rest = batcher.take().unwrap();
        assert_eq!(rest.entry_count(), 1);
    }

    #[test]
    fn the_deadline_follows_the_first_entry() {
        let stream = Arc::new(StreamLabels::new([("job", "a")]));
        let start = Instant::now();
        let mut batcher = Batcher::new(1000, Duration::from_secs(1), Duration::ZERO);
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
    fn a_waiting_client_shortens_the_wait_and_gets_its_ack_after_delivery() {
        let stream = Arc::new(StreamLabels::new([("job", "a")]));
        let start = Instant::now();
        let mut batcher = Batcher::new(1000, Duration::from_secs(1), Duration::from_millis(20));
        let (ticket, mut acked) = DeliveryTicket::new();
        let group = EntryGroup {
            entries: vec![entry(&stream, 1, "x")],
            charge: MemoryCharge::default(),
            tickets: vec![ticket],
        };
        assert!(batcher.add_group(group, start).is_empty());
        assert_eq!(batcher.deadline(), Some(start + Duration::from_millis(20)));
        let batch = batcher.take().unwrap();
        assert!(acked.try_recv().is_err(), "not acked while the batch is pending");
        drop(batch);
        assert_eq!(acked.try_recv(), Ok(()));
    }

    #[test]
    fn splitting_keeps_every_entry_and_ticket() {
        let stream = Arc::new(StreamLabels::new([("job", "a")]));
        let other = Arc::new(StreamLabels::new([("job", "b")]));
        let now = Instant::now();
        let mut batcher = Batcher::new(1000, Duration::from_secs(1), Duration::ZERO);
        let (ticket, mut acked) = DeliveryTicket::new();
        let entries = vec![entry(&stream, 1, "a"), entry(&stream, 2, "b"), entry(&other, 3, "c")];
        batcher
            .add_group(EntryGroup { entries, tickets: vec![ticket], ..EntryGroup::default() }, now);
        let (first, second) = batcher.take().unwrap().split_in_half().unwrap();
        assert_eq!((first.entry_count(), second.entry_count()), (1, 2));
        assert_eq!(second.streams().len(), 2);
        drop(first);
        assert!(acked.try_recv().is_err(), "the second half still holds the ticket");
        drop(second);
        assert_eq!(acked.try_recv(), Ok(()));
    }

    #[test]
    fn groups_by_stream_and_sorts_stably_by_time() {
        let a = Arc::new(StreamLabels::new([("job", "a")]));
        let other_a = Arc::new(StreamLabels::new([("job", "a")]));
        let b = Arc::new(StreamLabels::new([("job", "b")]));
        let now = Instant::now();
        let mut batcher = Batcher::new(1000, Duration::from_secs(1), Duration::ZERO);
        for (stream, timestamp_ns, line) in
            [(&a, 5, "a5"), (&b, 1, "b1"), (&other_a, 3, "a3"), (&a, 5, "a5-second"), (&a, 4, "a4")]
        {
            batcher.add(entry(stream, timestamp_ns, line), MemoryCharge::default(), now);
        }
        let mut batch = batcher.take().unwrap();
        batch.sort();
        assert_eq!(lines(&batch), [vec!["a3", "a4", "a5", "a5-second"], vec!["b1"]]);
    }
}
