//! The memory budget shared by every stage between the sockets and Loki.
//!
//! A connection reserves bytes before it hands entries on and the bytes are returned only when
//! Loki has taken the entries (or they were dropped with a reason), so memory stays bounded
//! whatever the lag. While the budget is spent, connections wait instead of reading their
//! sockets, and TCP backpressure reaches the clients.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;

/// The budget: a number of bytes that may be held at once.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    bytes: Arc<Semaphore>,
    capacity: usize,
    /// Bytes in use, exported as a metric.
    in_use: Gauge,
}

impl MemoryBudget {
    /// A budget of `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self::with_gauge(capacity, Gauge::default())
    }

    /// A budget of `capacity` bytes that keeps `in_use` at the bytes reserved.
    pub fn with_gauge(capacity: usize, in_use: Gauge) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Self { bytes: Arc::new(Semaphore::new(capacity)), capacity, in_use }
    }

    /// Waits until `bytes` are free and reserves them. A request larger than the whole budget
    /// reserves the whole budget, so it waits for everything else to drain but cannot deadlock.
    pub async fn reserve(&self, bytes: usize) -> MemoryCharge {
        let wanted = bytes.min(self.capacity);
        // Permits are taken in steps of at most u32::MAX, the most one call can take.
        let mut taken = 0;
        while taken < wanted {
            let step = (wanted - taken).min(u32::MAX as usize) as u32;
            self.bytes
                .acquire_many(step)
                .await
                .expect("the budget's semaphore is never closed")
                .forget();
            taken += step as usize;
        }
        self.in_use.inc_by(taken as i64);
        MemoryCharge { budget: Some(self.clone()), bytes: taken }
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> usize {
        self.capacity - self.bytes.available_permits()
    }

    /// The budget's size in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Bytes reserved from a [`MemoryBudget`], returned when the charge is dropped.
#[derive(Debug, Default)]
pub struct MemoryCharge {
    budget: Option<MemoryBudget>,
    bytes: usize,
}

impl MemoryCharge {
    /// Bytes held by this charge.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Moves up to `bytes` of `other` into this charge. No budget handle is copied unless this
    /// charge had none, so it is cheap enough to do for every entry.
    pub fn take_from(&mut self, other: &mut MemoryCharge, bytes: usize) {
        let moved = bytes.min(other.bytes);
        other.bytes -= moved;
        self.bytes += moved;
        if self.budget.is_none() {
            self.budget.clone_from(&other.budget);
        }
    }
}

impl Drop for MemoryCharge {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.in_use.dec_by(self.bytes as i64);
            budget.bytes.add_permits(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_taken_from_a_charge_return_with_their_new_charge() {
        let budget = MemoryBudget::new(100);
        let mut group = budget.reserve(60).await;
        let mut batch = MemoryCharge::default();
        batch.take_from(&mut group, 25);
        batch.take_from(&mut group, 100);
        assert_eq!((group.bytes(), batch.bytes()), (0, 60));
        drop(group);
        assert_eq!(budget.used(), 60);
        drop(batch);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn bytes_return_when_charges_drop() {
        let budget = MemoryBudget::new(100);
        let mut charge = budget.reserve(60).await;
        assert_eq!(budget.used(), 60);

        let mut part = MemoryCharge::default();
        part.take_from(&mut charge, 25);
        assert_eq!((charge.bytes(), part.bytes()), (35, 25));
        drop(part);
        assert_eq!(budget.used(), 35);

        let mut total = MemoryCharge::default();
        total.take_from(&mut charge, usize::MAX);
        drop(charge);
        assert_eq!(budget.used(), 35);
        drop(total);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn reserve_waits_while_the_budget_is_spent() {
        let budget = MemoryBudget::new(100);
        let held = budget.reserve(80).await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(50).await.bytes() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        assert_eq!(waiting.await.unwrap(), 50);
    }

    #[tokio::test]
    async fn a_request_over_the_capacity_takes_the_whole_budget() {
        let budget = MemoryBudget::new(100);
        let charge = budget.reserve(1_000).await;
        assert_eq!(charge.bytes(), 100);
        assert_eq!(budget.used(), 100);
    }
}
