//! The device ids the gateway reserves for itself. Every room may name
//! them; no configured `[[device]]` may take one (the loader refuses it).

/// The gateway's own health telemetry and events
/// (`{prefix}/{site}/gateway/...`): the contract's.
pub(crate) use wardgate_contract::GATEWAY_DEVICE;

/// The pseudo-device whose event records in the spool are command replies:
/// durable like events, and published on the reply topic instead of a
/// device's events.
pub const REPLY_DEVICE: &str = "cmd-reply";

/// The event code of a command reply record in the spool.
pub const REPLY_CODE: &str = "cmd.reply";
