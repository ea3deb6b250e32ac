//! One message from the broker through the consumer: the topic parsed
//! (`Topic::parse`), the payload decoded and checked against it
//! (`Message::decode`), then de-duplication and the ledger. [`consume`]
//! is the one decode path: [`Consumer`] (the ledger alone) and
//! [`crate::fleet::Monitor`] (the ledger and the fleet view, what `run`
//! feeds) both call it, and hand back what it decoded.

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

/// What one message was, decoded once.
#[derive(Debug)]
pub enum Handled<'t> {
    /// Telemetry, events or a status: decoded, and what the ledger made
    /// of its records (`applied.records`, in the message's order).
    Message {
        topic: Topic<'t>,
        message: Message,
        applied: Applied,
    },
    /// A topic of the contract the ledger does not follow (inventory,
    /// command requests and replies): its payload is not decoded here.
    Untyped(Topic<'t>),
}

impl<'t> Handled<'t> {
    /// The topic's site.
    pub fn site(&self) -> &'t str {
        match self {
            Handled::Message { topic, .. } | Handled::Untyped(topic) => topic.site(),
        }
    }
}

/// Parses `topic` under `prefix`, decodes `payload` and gives a message of
/// the ledger's to `ledger`, received at `at_ms`. A payload outside the
/// contract is counted as malformed for the topic's site.
pub fn consume<'t>(
    prefix: &str,
    ledger: &mut Ledger,
    topic: &'t str,
    payload: &[u8],
    at_ms: i64,
) -> Result<Handled<'t>, ConsumeError> {
    let t = Topic::parse(prefix, topic)?;
    match Message::decode(&t, payload) {
        Ok(message) => {
            let applied = ledger.apply(t.site(), &message, at_ms);
            Ok(Handled::Message {
                topic: t,
                message,
                applied,
            })
        }
        Err(DecodeError::Untyped(_)) => Ok(Handled::Untyped(t)),
        Err(source) => {
            ledger.malformed(t.site());
            Err(ConsumeError::Decode {
                site: t.site().to_owned(),
                source,
            })
        }
    }
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

    /// Takes one message received at `at_ms` ([`consume`]).
    pub fn handle<'t>(
        &mut self,
        topic: &'t str,
        payload: &[u8],
        at_ms: i64,
    ) -> Result<Handled<'t>, ConsumeError> {
        consume(&self.prefix, &mut self.ledger, topic, payload, at_ms)
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
        assert!(matches!(
            c.handle("ioc/xa-a/inventory", b"{}", 0).unwrap(),
            Handled::Untyped(Topic::Inventory { site: "xa-a" })
        ));
    }
}
