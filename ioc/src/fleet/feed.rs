//! One message from the broker into both views: decoded once
//! ([`crate::pipeline::consume`], the ledger's path), then the decoded
//! message, or the inventory, given to the fleet view. `wardgate-ioc run`
//! calls [`Monitor::handle`] for every message it receives.

use wardgate_contract::Topic;

use super::{Fleet, FleetError};
use crate::ledger::Ledger;
use crate::pipeline::{consume, ConsumeError, Handled};

/// Why a message went no further.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Not a topic of the contract, or a payload that is not its message
    /// (counted as malformed for the site): log it, drop it.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// An inventory the fleet could not read (counted as malformed).
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// The ledger and the fleet view, fed together.
#[derive(Debug, Clone)]
pub struct Monitor {
    prefix: String,
    pub ledger: Ledger,
    pub fleet: Fleet,
}

impl Monitor {
    pub fn new(prefix: &str, ledger: Ledger, fleet: Fleet) -> Self {
        Monitor {
            prefix: prefix.to_owned(),
            ledger,
            fleet,
        }
    }

    /// Takes one message received at `at_ms`; hands back what it decoded
    /// (the ingest writes the points of the new readings from it).
    pub fn handle<'t>(
        &mut self,
        topic: &'t str,
        payload: &[u8],
        at_ms: i64,
    ) -> Result<Handled<'t>, FeedError> {
        let h = consume(&self.prefix, &mut self.ledger, topic, payload, at_ms)?;
        match &h {
            Handled::Message { topic, message, .. } => {
                self.fleet.apply(topic.site(), message, at_ms);
            }
            Handled::Untyped(Topic::Inventory { site }) => {
                if let Err(e) = self.fleet.inventory(site, payload, at_ms) {
                    self.ledger.malformed(site);
                    return Err(e.into());
                }
            }
            Handled::Untyped(_) => {}
        }
        Ok(h)
    }
}
