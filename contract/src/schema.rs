//! The JSON Schemas of every message, as the files in `docs/schema/` (the
//! docs link to those files; this crate reads them at build time, so there
//! is one copy).

use crate::model::Kind;

/// `{prefix}/{site}/{device}/telemetry`.
pub const TELEMETRY: &str = include_str!("../../docs/schema/telemetry.schema.json");
/// `{prefix}/{site}/{device}/event`.
pub const EVENT: &str = include_str!("../../docs/schema/event.schema.json");
/// `{prefix}/{site}/status`.
pub const STATUS: &str = include_str!("../../docs/schema/status.schema.json");
/// `{prefix}/{site}/inventory`.
pub const INVENTORY: &str = include_str!("../../docs/schema/inventory.schema.json");
/// `{prefix}/{site}/cmd/{op}/{id}`.
pub const COMMAND_REQUEST: &str = include_str!("../../docs/schema/command-request.schema.json");
/// `{prefix}/{site}/cmd/{op}/{id}/reply`.
pub const COMMAND_REPLY: &str = include_str!("../../docs/schema/command-reply.schema.json");

/// Every schema with its file name in `docs/schema/`.
pub const ALL: [(&str, &str); 6] = [
    ("telemetry.schema.json", TELEMETRY),
    ("event.schema.json", EVENT),
    ("status.schema.json", STATUS),
    ("inventory.schema.json", INVENTORY),
    ("command-request.schema.json", COMMAND_REQUEST),
    ("command-reply.schema.json", COMMAND_REPLY),
];

/// The schema of a data message of `kind`.
pub fn for_kind(kind: Kind) -> &'static str {
    match kind {
        Kind::Sample => TELEMETRY,
        Kind::Event => EVENT,
    }
}

#[cfg(test)]
mod tests;
