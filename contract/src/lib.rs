//! The wardgate MQTT contract, in one place that the gateway and the
//! operations centre's (IOC's) consumer both build from. docs/mqtt.md says
//! it in words; this crate is the same contract as code:
//!
//! - [`model`]: the records on the wire ([`Sample`], [`Event`], [`Values`],
//!   [`ClockState`], [`Severity`], [`Kind`], [`Health`]) and the id, value
//!   name and event code rules.
//! - [`topic`]: the topic builders the gateway publishes with, the parser a
//!   consumer reads them back with ([`Topic::parse`]), [`GATEWAY_DEVICE`].
//! - [`envelope`]: the telemetry and event batch envelope
//!   ([`Envelope`], [`Delivered`] records with their `historical` flag, the
//!   [`Epoch`]), the online/offline [`Status`], and their decoders, which
//!   return an error naming what is wrong, never panic.
//! - [`schema`]: the JSON Schemas of `docs/schema/`, read from those files.
//! - [`seq`]: a record's identity `(site, device, kind, epoch, seq)`, the
//!   gap rule ([`gaps`]: which numbers are missing, which came twice) and
//!   the duplicate rule ([`keep`]: of an unsynced and a corrected copy,
//!   keep the corrected one).
//! - [`correction`]: the `gateway.clock_corrected` rule.
//! - [`words`]: what people read for a value (Vietnamese and English
//!   labels, units, formats), numbers and durations the local way, the
//!   site's time zone: the gateway's page and the IOC's pages say the same.
//! - [`command`]: the IOC's command request ([`Request`]) and the
//!   gateway's replies ([`Reply`], [`ReplyStatus`]), their topics, and the
//!   envelope's rules as a gateway reads a request (the 64 KiB cap, the
//!   payload's shape, the expiry rule), with the words of each rejection.
//! - [`gateway`]: what the gateway says about its own losses (its
//!   telemetry's `spool.depth` and `spool.dropped.<reason>`, the
//!   `gateway.unclean_stop`, `gateway.sequence_reset` and `spool.*`
//!   events), readers and writers, and which numbers each explains.
//! - [`seq`] also has [`fingerprint`] and [`keep_fingerprints`]: the
//!   duplicate rule on digests, for a consumer that remembers many records.
//!
//! All of it is pure: no I/O, no clock, no state kept between calls.
//!
//! What the IOC adds on top (not here): the gap ledger, which follows each
//! stream over time and moves each hole from pending (backlog may still
//! fill it) to filled or to lost, explained by what the gateway said
//! (`spool.depth` reaching 0, `spool.dropped.<reason>`, `spool.*` events,
//! `gateway.unclean_stop`'s `seq_resumed`/`seq_last_used`, a
//! `gateway.sequence_reset` opening a new epoch), with its store; and the
//! storage of records keyed by [`RecordKey`].
//!
//! What stays in the gateway: its sources, spool and sinks, and the fast
//! encoder that splices the spool's stored record bodies into an envelope
//! (its tests decode what it makes with this crate and check it against
//! the schemas).

pub mod command;
pub mod correction;
pub mod envelope;
pub mod gateway;
pub mod model;
pub mod schema;
pub mod seq;
pub mod topic;
pub mod words;

pub use command::{CommandError, Reply, ReplyStatus, Request};
pub use correction::{ClockCorrection, CorrectionError};
pub use envelope::{
    BadEpoch, DecodeError, Delivered, Envelope, Epoch, Events, Message, OfflineReason, Record,
    Status, Telemetry,
};
pub use gateway::{
    CorruptRecords, Degraded, DropReason, GatewayError, GatewayHealth, Quarantined, Restored,
    ResumedStream, SequenceReset, StopExplains, UncleanStop,
};
pub use model::{
    valid_event_code, valid_id, valid_value_name, ClockState, Event, Health, Kind, Sample,
    Severity, Value, Values,
};
pub use seq::{
    fingerprint, gaps, keep, keep_fingerprints, CopyConflict, Fingerprint, Gaps, Keep, RecordKey,
    SeqRange, StreamKey,
};
pub use topic::{data_topic, status_topic, Topic, TopicError, GATEWAY_DEVICE};

/// Event codes the rules of this crate and the IOC's ledger refer to
/// (docs/mqtt.md, the events table; the gateway's catalogue has them all).
pub mod codes {
    /// A new epoch began (`values`: `epoch`, `previous_epoch`, `reason`).
    pub const SEQUENCE_RESET: &str = "gateway.sequence_reset";
    /// The previous run did not stop cleanly (`values`:
    /// `seq_resumed.<device>.<kind>`, `seq_last_used.<device>.<kind>`).
    pub const UNCLEAN_STOP: &str = "gateway.unclean_stop";
    /// Records sent `unsynced` had a wrong `ts` ([`crate::correction`]).
    pub const CLOCK_CORRECTED: &str = "gateway.clock_corrected";
    /// A record set aside, never sent (`values`: `record.device`,
    /// `record.kind`, `record.seq`, `record.bytes`).
    pub const SPOOL_QUARANTINED: &str = "spool.quarantined";
    /// Damaged records dropped (`values`: `spool.records`, `spool.reason`).
    pub const SPOOL_CORRUPT_RECORD: &str = "spool.corrupt_record";
    /// The card cannot be written (`values`: `spool.reason`, `spool.detail`).
    pub const SPOOL_DEGRADED: &str = "spool.degraded";
    /// The card can be written again (`values`: `spool.degraded_for`,
    /// `spool.lost`).
    pub const SPOOL_RESTORED: &str = "spool.restored";
    /// The spool was unreadable at start and moved aside (`values`:
    /// `spool.moved_to`, `spool.reason`); it says no count.
    pub const SPOOL_CORRUPT: &str = "spool.corrupt";
}
