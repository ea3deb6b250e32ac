//! The sink's side of remote commands: what it needs from the command
//! room, as a trait that room implements. The sink subscribes, hands each
//! request over without waiting and publishes what it is given (the
//! inventory, reply records as reply messages); it never runs a command
//! and never names the dispatcher.

use tokio::sync::watch;

use super::SinkCounters;
use crate::spool::Batch;

pub trait CommandPort: Send + Sync {
    /// The command subscription (`{prefix}/{site}/cmd/+/+`); None when
    /// commands are off.
    fn filter(&self) -> Option<String>;

    /// The inventory's topic and its current body, published retained on
    /// every connection and again on change.
    fn inventory(&self) -> (String, watch::Receiver<Vec<u8>>);

    /// Hands one request over; false when it was refused or dropped (the
    /// port counts it in `counters` and logs it). Never waits.
    fn hand_over(&self, topic: &str, payload: &[u8], counters: &SinkCounters) -> bool;

    /// The messages of a batch of reply records: (topic, payload) each,
    /// in order; an error when a record is not a reply.
    fn reply_messages(&self, batch: &Batch) -> Result<Vec<(String, Vec<u8>)>, String>;
}
