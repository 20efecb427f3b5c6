//! What a receiver has counted, shared between its connection tasks and the load run that
//! waits for the count.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Entries (or events) counted by one receiver, and when the last of them arrived.
#[derive(Debug, Default)]
pub struct Tally {
    entries: AtomicU64,
    line_bytes: AtomicU64,
    deliveries: AtomicU64,
    last_arrival: Mutex<Option<Instant>>,
    failure: Mutex<Option<String>>,
}

impl Tally {
    /// Counts `entries` carrying `line_bytes` bytes of lines, arrived now.
    pub fn record(&self, entries: u64, line_bytes: u64) {
        if entries == 0 {
            return;
        }
        // The time is set before the count grows, so whoever sees the final count also sees
        // a time no earlier than the arrival that completed it.
        *self.last_arrival.lock().expect("tally lock is not poisoned") = Some(Instant::now());
        self.line_bytes.fetch_add(line_bytes, Ordering::Relaxed);
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        self.entries.fetch_add(entries, Ordering::Release);
    }

    /// Notes why the receiver could not count something; the first reason is kept.
    pub fn fail(&self, reason: String) {
        self.failure.lock().expect("tally lock is not poisoned").get_or_insert(reason);
    }

    /// Entries counted so far.
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Acquire)
    }

    /// Bytes of the lines counted so far (zero for receivers that do not look at lines).
    pub fn line_bytes(&self) -> u64 {
        self.line_bytes.load(Ordering::Relaxed)
    }

    /// How many times entries were counted: one per push for a Loki receiver.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// When the latest entries arrived.
    pub fn last_arrival(&self) -> Option<Instant> {
        *self.last_arrival.lock().expect("tally lock is not poisoned")
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("tally lock is not poisoned").clone()
    }
}
