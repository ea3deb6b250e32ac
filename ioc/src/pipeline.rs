//! One message from the broker through the consumer: the topic parsed
//! (`Topic::parse`), the payload decoded and checked against it
//! (`Message::decode`), then de-duplication and the ledger.

use wardgate_contract::{DecodeError, Message, Topic, TopicError};

use crate::ledger::{Applied, Ledger};

/// Why a message went no further than decoding.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The topic is not one of the contract's: log it once, drop it.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The payload is not a message of the contract: counted as malformed
    /// for the topic's site (the ledger's totals), logged, not stored.
    #[error("site {site}: {source}")]
    Decode {
        site: String,
        #[source]
        source: DecodeError,
    },
}

/// The consumer: a topic prefix and the ledger it feeds.
#[derive(Debug, Clone)]
pub struct Consumer {
    prefix: String,
    pub ledger: Ledger,
}

impl Consumer {
    pub fn new(prefix: &str, ledger: Ledger) -> Self {
        Consumer {
            prefix: prefix.to_owned(),
            ledger,
        }
    }

    /// Takes one message received at `at_ms`. `Ok(None)`: a topic of the
    /// contract the ledger does not follow (inventory, commands).
    pub fn handle(
        &mut self,
        topic: &str,
        payload: &[u8],
        at_ms: i64,
    ) -> Result<Option<Applied>, ConsumeError> {
        let t = Topic::parse(&self.prefix, topic)?;
        match Message::decode(&t, payload) {
            Ok(m) => Ok(Some(self.ledger.apply(t.site(), &m, at_ms))),
            Err(DecodeError::Untyped(_)) => Ok(None),
            Err(source) => {
                self.ledger.malformed(t.site());
                Err(ConsumeError::Decode {
                    site: t.site().to_owned(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_malformed_payloads_per_site_and_skips_untyped() {
        let mut c = Consumer::new("ioc", Ledger::default());
        let cases: &[(&str, &[u8], &str)] = &[
            ("ioc/xa-a/ups1/telemetry", b"{", "not a valid telemetry"),
            ("ioc/xa-a/ups1/telemetry", b"\xff\xfe", "not a valid telemetry"),
            (
                "ioc/xa-a/ups1/event",
                br#"{"site":"xa-b","device":"ups1","epoch":"0000000000000001","events":[{"historical":false,"seq":0,"ts":1,"clock":"synced","severity":"info","code":"a.b","message":"m"}]}"#,
                "the topic's site",
            ),
            ("other/xa-a/ups1/telemetry", b"{}", "not under"),
        ];
        for (topic, payload, says) in cases {
            let err = c.handle(topic, payload, 0).unwrap_err().to_string();
            assert!(err.contains(says), "{topic}: {err}");
        }
        assert_eq!(c.ledger.totals("xa-a").unwrap().malformed, 3);
        assert!(c.handle("ioc/xa-a/inventory", b"{}", 0).unwrap().is_none());
    }
}
