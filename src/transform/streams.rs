//! The cardinality guard: a cap on the streams in use at once.
//!
//! A label key whose values never repeat (a request id, say) would make a new stream per
//! line, which Loki punishes with `stream_limit` refusals for everyone. Past the cap, entries of
//! new streams go to one overflow stream (the static labels plus `stream_overflow="true"`),
//! counted and logged, so that nothing is lost and the cause is visible. A stream is in use
//! while any connection or batch holds its label set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tracing::warn;

use crate::log_limit::LogLimiter;
use crate::loki::labels::StreamLabels;

/// The label set shared by every entry past the cap, besides the static labels.
pub const OVERFLOW_LABEL: (&str, &str) = ("stream_overflow", "true");

/// The streams in use, up to a cap.
#[derive(Debug)]
pub struct StreamRegistry {
    max_streams: usize,
    overflow: Arc<StreamLabels>,
    live: Mutex<HashMap<Box<str>, Weak<StreamLabels>>>,
    overflowed: Counter,
    log_limiter: LogLimiter,
}

/// Whether a label set was let in.
#[derive(Debug, Clone)]
pub enum Admission {
    /// The stream's shared label set.
    Admitted(Arc<StreamLabels>),
    /// The cap is reached: the overflow stream's label set.
    Overflow(Arc<StreamLabels>),
}

impl StreamRegistry {
    /// A registry of at most `max_streams` streams, overflowing into `overflow`.
    pub fn new(max_streams: usize, overflow: StreamLabels) -> Self {
        Self {
            max_streams,
            overflow: Arc::new(overflow),
            live: Mutex::new(HashMap::new()),
            overflowed: Counter::default(),
            log_limiter: LogLimiter::new(Duration::from_secs(60)),
        }
    }

    /// Counts entries sent to the overflow stream in `counter` from now on.
    pub fn count_overflow_in(&mut self, counter: Counter) {
        self.overflowed = counter;
    }

    /// The shared label set for `labels`, or the overflow stream's when the cap is reached.
    pub fn admit(&self, labels: StreamLabels) -> Admission {
        let mut live = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The same selector with another tenant or structured metadata is another label set:
        // entries must keep their own tenant.
        let same = |existing: &Arc<StreamLabels>| **existing == labels;
        if let Some(existing) = live.get(labels.selector()).and_then(Weak::upgrade).filter(same) {
            return Admission::Admitted(existing);
        }
        if live.len() >= self.max_streams {
            live.retain(|_, stream| stream.strong_count() > 0);
        }
        if live.len() >= self.max_streams {
            drop(live);
            self.overflowed.inc();
            if let Some(held_back) = self.log_limiter.allow("overflow") {
                warn!(
                    max_streams = self.max_streams,
                    stream = %labels,
                    held_back,
                    "stream limit reached; entries go to the overflow stream"
                );
            }
            return Admission::Overflow(Arc::clone(&self.overflow));
        }
        let stream = Arc::new(labels);
        live.insert(stream.selector().into(), Arc::downgrade(&stream));
        Admission::Admitted(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str) -> StreamLabels {
        StreamLabels::new([("job", "a"), ("container_name", name)])
    }

    #[test]
    fn streams_past_the_cap_overflow_until_others_end() {
        let registry = StreamRegistry::new(2, StreamLabels::new([("job", "a"), OVERFLOW_LABEL]));
        let Admission::Admitted(first) = registry.admit(labels("/1")) else { panic!() };
        let Admission::Admitted(_second) = registry.admit(labels("/2")) else { panic!() };
        let Admission::Admitted(again) = registry.admit(labels("/1")) else { panic!() };
        assert!(Arc::ptr_eq(&first, &again), "a stream in use is shared");
        let Admission::Overflow(overflow) = registry.admit(labels("/3")) else { panic!() };
        assert_eq!(overflow.selector(), r#"{job="a", stream_overflow="true"}"#);
        assert_eq!(registry.overflowed.get(), 1);

        drop((first, again));
        assert!(matches!(registry.admit(labels("/3")), Admission::Admitted(_)), "room again");
    }
}
