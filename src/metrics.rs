//! fwd2loki's own Prometheus metrics.
//!
//! Metric design follows Prometheus practice: where values are alternatives of one thing they
//! are one metric with a label (`fwd2loki_loki_requests_total{status="429"}`), and every label
//! has a small, fixed set of values (reasons, listeners, status codes), never container names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// Labels naming a listen address.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// The address as bound, `ip:port` or `unix:/path`.
    pub listener: String,
}

/// Labels naming a fixed reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// One of a fixed set of reasons, e.g. `invalid_msgpack` or `loki_400`.
    pub reason: &'static str,
}

/// Labels naming the outcome of a push request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// The HTTP status code, or `error` when no answer came.
    pub status: String,
}

/// Every metric, registered in one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Forward events received, by listener.
    pub records_received: Family<ListenerLabels, Counter>,
    /// Bytes of forward requests received, by listener.
    pub bytes_received: Family<ListenerLabels, Counter>,
    /// Connections open now, by listener.
    pub connections_open: Family<ListenerLabels, Gauge>,
    /// Connections closed because of bad input or limits, by reason.
    pub input_errors: Family<ReasonLabels, Counter>,
    /// Entries Loki accepted.
    pub entries_pushed: Counter,
    /// Line bytes of the entries Loki accepted.
    pub bytes_pushed: Counter,
    /// Entries given up, by reason.
    pub entries_dropped: Family<ReasonLabels, Counter>,
    /// Entries whose line was cut to `max_line_bytes`.
    pub lines_truncated: Counter,
    /// Push requests by answer.
    pub loki_requests: Family<StatusLabels, Counter>,
    /// Pushes retried after a 429, 5xx or transport error.
    pub push_retries: Counter,
    /// Time from sending a push to its answer.
    pub push_duration: Histogram,
    /// Bytes of entries held between the sockets and Loki.
    pub buffer_bytes: Gauge,
    /// Streams in the batch being filled.
    pub streams_open: Gauge,
    /// Entries sent to the overflow stream because the stream limit was reached.
    pub stream_overflow_entries: Counter,
    /// Bytes of disk buffer segment files.
    pub disk_buffer_bytes: Gauge,
    /// Damaged or torn disk buffer records skipped.
    pub disk_records_corrupt: Counter,
    /// Lines Docker split that were joined whole.
    pub partials_joined: Counter,
    /// Lines Docker split that were shipped before they were whole, by reason.
    pub partials_flushed: Family<ReasonLabels, Counter>,
    /// Entries moved to 1 ns after the previous entry of their stream, to keep arrival order.
    pub timestamps_moved: Counter,
    /// Entries older than the previous one of their stream by more than `order_window`.
    pub timestamps_out_of_order: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric, with the build info.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fwd2loki");
        let metrics = Self {
            records_received: Family::default(),
            bytes_received: Family::default(),
            connections_open: Family::default(),
            input_errors: Family::default(),
            entries_pushed: Counter::default(),
            bytes_pushed: Counter::default(),
            entries_dropped: Family::default(),
            lines_truncated: Counter::default(),
            loki_requests: Family::default(),
            push_retries: Counter::default(),
            push_duration: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            buffer_bytes: Gauge::default(),
            streams_open: Gauge::default(),
            stream_overflow_entries: Counter::default(),
            disk_buffer_bytes: Gauge::default(),
            disk_records_corrupt: Counter::default(),
            partials_joined: Counter::default(),
            partials_flushed: Family::default(),
            timestamps_moved: Counter::default(),
            timestamps_out_of_order: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("records_received", "Forward events received", metrics.records_received.clone());
        r.register_with_unit(
            "received",
            "Bytes of forward requests received",
            Unit::Bytes,
            metrics.bytes_received.clone(),
        );
        r.register(
            "connections_open",
            "Forward connections open",
            metrics.connections_open.clone(),
        );
        r.register(
            "input_errors",
            "Connections closed for bad input or limits, by reason",
            metrics.input_errors.clone(),
        );
        r.register("entries_pushed", "Entries Loki accepted", metrics.entries_pushed.clone());
        r.register_with_unit(
            "pushed",
            "Line bytes of the entries Loki accepted",
            Unit::Bytes,
            metrics.bytes_pushed.clone(),
        );
        r.register(
            "entries_dropped",
            "Entries given up, by reason",
            metrics.entries_dropped.clone(),
        );
        r.register(
            "lines_truncated",
            "Entries whose line was cut to max_line_bytes",
            metrics.lines_truncated.clone(),
        );
        r.register("loki_requests", "Push requests by HTTP status", metrics.loki_requests.clone());
        r.register("push_retries", "Pushes retried", metrics.push_retries.clone());
        r.register_with_unit(
            "push_duration",
            "Time from sending a push to Loki's answer",
            Unit::Seconds,
            metrics.push_duration.clone(),
        );
        r.register_with_unit(
            "buffer",
            "Bytes of entries held between the sockets and Loki",
            Unit::Bytes,
            metrics.buffer_bytes.clone(),
        );
        r.register(
            "streams_open",
            "Streams in the batch being filled",
            metrics.streams_open.clone(),
        );
        r.register(
            "stream_overflow_entries",
            "Entries sent to the overflow stream because the stream limit was reached",
            metrics.stream_overflow_entries.clone(),
        );
        r.register_with_unit(
            "disk_buffer",
            "Bytes of disk buffer segment files",
            Unit::Bytes,
            metrics.disk_buffer_bytes.clone(),
        );
        r.register(
            "disk_records_corrupt",
            "Damaged or torn disk buffer records skipped",
            metrics.disk_records_corrupt.clone(),
        );
        r.register(
            "partials_joined",
            "Lines Docker split into parts that were joined whole",
            metrics.partials_joined.clone(),
        );
        r.register(
            "partials_flushed",
            "Lines Docker split that were shipped before they were whole, by reason",
            metrics.partials_flushed.clone(),
        );
        r.register(
            "timestamps_moved",
            "Entries moved to 1ns after the previous entry of their stream to keep arrival order",
            metrics.timestamps_moved.clone(),
        );
        r.register(
            "timestamps_out_of_order",
            "Entries older than the previous entry of their stream by more than order_window",
            metrics.timestamps_out_of_order.clone(),
        );
        let version = Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
        r.register("build", "fwd2loki's version", version);
        // Known reasons start at zero, so that rates and alerts work before the first event.
        for reason in ["line_too_long", "loki_400", "loki_413"] {
            metrics.dropped(reason, 0);
        }
        for reason in ["invalid_msgpack", "unknown_shape", "message_too_large"] {
            metrics.input_errors.get_or_create(&ReasonLabels { reason }).inc_by(0);
        }
        for reason in ["timeout", "too_large", "closed", "too_many"] {
            metrics.partials_flushed.get_or_create(&ReasonLabels { reason }).inc_by(0);
        }
        Self { registry, ..metrics }
    }

    /// Counts `entries` dropped for `reason`.
    pub fn dropped(&self, reason: &'static str, entries: u64) {
        self.entries_dropped.get_or_create(&ReasonLabels { reason }).inc_by(entries);
    }

    /// How many entries were dropped for `reason` so far.
    pub fn dropped_count(&self, reason: &'static str) -> u64 {
        self.entries_dropped.get_or_create(&ReasonLabels { reason }).get()
    }

    /// Counts a split line shipped before it was whole, for `reason`.
    pub fn partial_flushed(&self, reason: &'static str) {
        self.partials_flushed.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a connection closed for `reason`.
    pub fn input_error(&self, reason: &'static str) {
        self.input_errors.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
