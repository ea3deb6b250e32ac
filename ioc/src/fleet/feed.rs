//! One message from the broker into both views: decoded once, then given
//! to the ledger and to the fleet view. What `pipeline::Consumer::handle`
//! does for the ledger, plus the fleet and the inventory; ingest calls
//! [`Monitor::handle`] for every message it receives.

use wardgate_contract::{DecodeError, Message, Topic};

use super::{Fleet, FleetError};
use crate::ledger::Ledger;
use crate::pipeline::ConsumeError;

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

    /// Takes one message received at `at_ms`.
    pub fn handle(&mut self, topic: &str, payload: &[u8], at_ms: i64) -> Result<(), FeedError> {
        let t = Topic::parse(&self.prefix, topic).map_err(ConsumeError::from)?;
        let site = t.site();
        match Message::decode(&t, payload) {
            Ok(m) => {
                self.ledger.apply(site, &m, at_ms);
                self.fleet.apply(site, &m, at_ms);
                Ok(())
            }
            Err(DecodeError::Untyped(_)) => match t {
                Topic::Inventory { .. } => {
                    let r = self.fleet.inventory(site, payload, at_ms);
                    if r.is_err() {
                        self.ledger.malformed(site);
                    }
                    Ok(r?)
                }
                _ => Ok(()),
            },
            Err(source) => {
                self.ledger.malformed(site);
                Err(ConsumeError::Decode {
                    site: site.to_owned(),
                    source,
                }
                .into())
            }
        }
    }
}
