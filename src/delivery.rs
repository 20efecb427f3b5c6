//! Tracking when received events are safe, so that forward acks are sent only then.
//!
//! Every request that asks for an ack gets a [`DeliveryTicket`]. Each batch holding entries of
//! the request keeps a reference to the ticket; when the last reference is dropped, the events
//! have been handled (Loki stored them, or refused them for good and they were counted as
//! dropped) and the connection writes the ack. A batch given up at shutdown marks its tickets
//! abandoned first, so their requests stay unacknowledged and the clients send them again.
//!
//! The disk buffer uses the same mechanism through [`Completion`]: a segment file is deleted
//! when the last batch holding its entries is done with them.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;

use crate::buffer::MemoryCharge;
use crate::transform::Entry;

/// Signals, when dropped, that the events of one request are safe.
#[derive(Debug)]
pub struct DeliveryTicket {
    done: Option<oneshot::Sender<()>>,
    abandoned: AtomicBool,
}

/// Resolves to `Ok(())` when the ticket's events are safe, or to an error when they were
/// abandoned.
pub type TicketReceiver = oneshot::Receiver<()>;

/// Something that acts when the entries it is attached to are done with: dropped after Loki
/// stored or refused them. Batches hold completions in `Arc`s; the last drop triggers it.
pub trait Completion: Send + Sync + Debug {
    /// Marks the entries as not delivered, so that dropping does not count them as done.
    fn abandon(&self);
}

impl DeliveryTicket {
    /// A new ticket and the receiver that learns its outcome.
    pub fn new() -> (Arc<Self>, TicketReceiver) {
        let (done, receiver) = oneshot::channel();
        let ticket = Self { done: Some(done), abandoned: AtomicBool::new(false) };
        (Arc::new(ticket), receiver)
    }
}

impl Completion for DeliveryTicket {
    /// No ack will be sent for the events.
    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
    }
}

impl Drop for DeliveryTicket {
    fn drop(&mut self) {
        if !self.abandoned.load(Ordering::Acquire) {
            if let Some(done) = self.done.take() {
                // The connection may be gone already; then nobody waits for this ack.
                let _ = done.send(());
            }
        }
    }
}

/// Entries handed from a connection to the batcher, with the memory they were charged and the
/// tickets of the requests they came from.
#[derive(Debug, Default)]
pub struct EntryGroup {
    /// The entries, in the order they arrived.
    pub entries: Vec<Entry>,
    /// The memory reserved for them.
    pub charge: MemoryCharge,
    /// What waits for these entries to be done: the tickets of the requests they came from,
    /// or the disk segment they were read from.
    pub tickets: Vec<Arc<dyn Completion>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticket_resolves_when_its_last_reference_drops() {
        let (ticket, mut receiver) = DeliveryTicket::new();
        let held_by_batch = Arc::clone(&ticket);
        drop(ticket);
        assert!(receiver.try_recv().is_err(), "still held by a batch");
        drop(held_by_batch);
        assert_eq!(receiver.try_recv(), Ok(()));
    }

    #[test]
    fn an_abandoned_ticket_never_resolves_successfully() {
        let (ticket, mut receiver) = DeliveryTicket::new();
        ticket.abandon();
        drop(ticket);
        assert!(receiver.try_recv().is_err());
    }
}
