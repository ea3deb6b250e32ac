//! Topic names: the builders the gateway publishes with and the parser the
//! operations centre reads them back with (docs/mqtt.md, "Topics").
//!
//! ```text
//! {prefix}/{site}/{device}/telemetry     readings of one device
//! {prefix}/{site}/{device}/event         events of one device
//! {prefix}/{site}/status                 online/offline (retained)
//! {prefix}/{site}/inventory              what the gateway is (retained)
//! {prefix}/{site}/cmd/{op}/{id}          a command request from the IOC
//! {prefix}/{site}/cmd/{op}/{id}/reply    the gateway's replies to it
//! ```
//!
//! The gateway's own health and events travel as device [`GATEWAY_DEVICE`].

use crate::model::{valid_id, Kind};

/// The device id of the gateway itself: its own telemetry and events
/// (`{prefix}/{site}/gateway/telemetry`, `.../gateway/event`). A config
/// may not give it to a device.
pub const GATEWAY_DEVICE: &str = "gateway";

/// `{prefix}/{site}/{device}/telemetry` or `.../event`.
pub fn data_topic(prefix: &str, site: &str, device: &str, kind: Kind) -> String {
    format!("{prefix}/{site}/{device}/{}", kind.topic_leaf())
}

/// `{prefix}/{site}/status`: retained birth and last will.
pub fn status_topic(prefix: &str, site: &str) -> String {
    format!("{prefix}/{site}/status")
}

/// A topic of the contract, its levels borrowed from the topic string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// `{prefix}/{site}/{device}/telemetry` or `.../event`.
    Data {
        site: &'a str,
        device: &'a str,
        kind: Kind,
    },
    /// `{prefix}/{site}/status`.
    Status { site: &'a str },
    /// `{prefix}/{site}/inventory`.
    Inventory { site: &'a str },
    /// `{prefix}/{site}/cmd/{op}/{id}`: a request, published by the IOC.
    Command {
        site: &'a str,
        op: &'a str,
        id: &'a str,
    },
    /// `{prefix}/{site}/cmd/{op}/{id}/reply`: the gateway's replies.
    Reply {
        site: &'a str,
        op: &'a str,
        id: &'a str,
    },
}

/// Why a topic is not one of the contract's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic is not under `{prefix}/`: not this contract's; ignore it
    /// (a subscription to `{prefix}/#` never delivers one).
    #[error("topic {topic:?} is not under {prefix:?}/")]
    NotUnderPrefix { topic: String, prefix: String },
    /// A site or device level is not an id (`[a-z0-9][a-z0-9_-]*`, at
    /// most 64 characters): not published by a gateway; count and drop it.
    #[error(
        "topic {topic:?}: {level} {id:?} is not an id ([a-z0-9][a-z0-9_-]*, at most 64 characters)"
    )]
    BadId {
        topic: String,
        level: &'static str,
        id: String,
    },
    /// A command topic whose op or id breaks its pattern (op
    /// `[a-z0-9._-]{1,64}`, id `[A-Za-z0-9_-]{1,64}`): the gateway does not
    /// answer such a request; count and drop it.
    #[error("topic {topic:?}: {level} {value:?} breaks its pattern")]
    BadCommand {
        topic: String,
        level: &'static str,
        value: String,
    },
    /// Levels in no shape the contract has (a new kind of topic from a newer
    /// gateway, or someone else's): log it once and ignore it.
    #[error("topic {topic:?} has no shape of the contract")]
    Unknown { topic: String },
}

impl<'a> Topic<'a> {
    /// Parses `topic` as published under `prefix` (`mqtt.prefix`, e.g.
    /// `ioc`; it may have levels of its own).
    pub fn parse(prefix: &str, topic: &'a str) -> Result<Topic<'a>, TopicError> {
        let rest = topic
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| TopicError::NotUnderPrefix {
                topic: topic.to_owned(),
                prefix: prefix.to_owned(),
            })?;
        let levels: Vec<&'a str> = rest.split('/').collect();
        let bad_id = |level: &'static str, id: &str| TopicError::BadId {
            topic: topic.to_owned(),
            level,
            id: id.to_owned(),
        };
        let unknown = || TopicError::Unknown {
            topic: topic.to_owned(),
        };
        let site = levels[0];
        if !valid_id(site) {
            return Err(bad_id("site", site));
        }
        let parsed = match levels[1..] {
            ["status"] => Topic::Status { site },
            ["inventory"] => Topic::Inventory { site },
            [device, leaf] => {
                let kind = Kind::from_topic_leaf(leaf).ok_or_else(unknown)?;
                if !valid_id(device) {
                    return Err(bad_id("device", device));
                }
                Topic::Data { site, device, kind }
            }
            ["cmd", op, id] | ["cmd", op, id, "reply"] => {
                let bad = |level: &'static str, value: &str| TopicError::BadCommand {
                    topic: topic.to_owned(),
                    level,
                    value: value.to_owned(),
                };
                if !valid_op(op) {
                    return Err(bad("op", op));
                }
                if !valid_command_id(id) {
                    return Err(bad("id", id));
                }
                if levels.len() == 4 {
                    Topic::Command { site, op, id }
                } else {
                    Topic::Reply { site, op, id }
                }
            }
            _ => return Err(unknown()),
        };
        Ok(parsed)
    }

    /// The site every topic names.
    pub fn site(&self) -> &'a str {
        match *self {
            Topic::Data { site, .. }
            | Topic::Status { site }
            | Topic::Inventory { site }
            | Topic::Command { site, .. }
            | Topic::Reply { site, .. } => site,
        }
    }
}

/// A command's op as a topic level: `[a-z0-9._-]{1,64}`.
pub fn valid_op(op: &str) -> bool {
    (1..=64).contains(&op.len())
        && op
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// A command's id, chosen by the IOC: `[A-Za-z0-9_-]{1,64}`.
pub fn valid_command_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders() {
        assert_eq!(
            data_topic("ioc", "s", "ups1", Kind::Sample),
            "ioc/s/ups1/telemetry"
        );
        assert_eq!(
            data_topic("ioc", "s", "ups1", Kind::Event),
            "ioc/s/ups1/event"
        );
        assert_eq!(status_topic("ioc", "s"), "ioc/s/status");
    }

    #[test]
    fn parse_table() {
        use Topic::*;
        let ok: &[(&str, &str, Topic)] = &[
            (
                "ioc",
                "ioc/xa-a/ups1/telemetry",
                Data {
                    site: "xa-a",
                    device: "ups1",
                    kind: Kind::Sample,
                },
            ),
            (
                "ioc",
                "ioc/xa-a/gateway/event",
                Data {
                    site: "xa-a",
                    device: GATEWAY_DEVICE,
                    kind: Kind::Event,
                },
            ),
            ("ioc", "ioc/xa-a/status", Status { site: "xa-a" }),
            ("ioc", "ioc/xa-a/inventory", Inventory { site: "xa-a" }),
            (
                "ioc",
                "ioc/xa-a/cmd/config.set/c-81",
                Command {
                    site: "xa-a",
                    op: "config.set",
                    id: "c-81",
                },
            ),
            (
                "ioc",
                "ioc/xa-a/cmd/poll/Ab_9/reply",
                Reply {
                    site: "xa-a",
                    op: "poll",
                    id: "Ab_9",
                },
            ),
            // A device may be called like a topic word: the level count
            // tells them apart.
            (
                "ioc",
                "ioc/xa-a/cmd/telemetry",
                Data {
                    site: "xa-a",
                    device: "cmd",
                    kind: Kind::Sample,
                },
            ),
            (
                "ioc",
                "ioc/xa-a/status/event",
                Data {
                    site: "xa-a",
                    device: "status",
                    kind: Kind::Event,
                },
            ),
            // A prefix of several levels.
            (
                "prov/ioc",
                "prov/ioc/s/ups1/telemetry",
                Data {
                    site: "s",
                    device: "ups1",
                    kind: Kind::Sample,
                },
            ),
        ];
        for (prefix, topic, want) in ok {
            assert_eq!(Topic::parse(prefix, topic).as_ref(), Ok(want), "{topic}");
            assert_eq!(want.site(), Topic::parse(prefix, topic).unwrap().site());
        }
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&str, &str, &str)] = &[
            ("ioc", "other/s/ups1/telemetry", "not under"),
            ("ioc", "iocx/s/ups1/telemetry", "not under"),
            ("ioc", "ioc", "not under"),
            ("ioc", "ioc/", "site \"\""),
            ("ioc", "ioc/S/ups1/telemetry", "site \"S\""),
            ("ioc", "ioc/s/UPS1/telemetry", "device \"UPS1\""),
            ("ioc", "ioc/s//telemetry", "device \"\""),
            ("ioc", "ioc/s/ups1/events", "no shape"),
            ("ioc", "ioc/s/ups1/telemetry/lz4", "no shape"),
            ("ioc", "ioc/s", "no shape"),
            ("ioc", "ioc/s/cmd/Poll/c1", "op \"Poll\""),
            ("ioc", "ioc/s/cmd/poll/c 1", "id \"c 1\""),
            ("ioc", "ioc/s/cmd/poll/c1/answer", "no shape"),
            ("ioc", "ioc/s/cmd/poll", "no shape"),
        ];
        for (prefix, topic, says) in cases {
            let err = Topic::parse(prefix, topic).expect_err(topic).to_string();
            assert!(err.contains(says), "{topic}: {err}");
        }
        let long = format!("ioc/s/cmd/poll/{}", "a".repeat(65));
        assert!(matches!(
            Topic::parse("ioc", &long),
            Err(TopicError::BadCommand { level: "id", .. })
        ));
    }

    #[test]
    fn what_the_builders_make_parses_back() {
        for kind in [Kind::Sample, Kind::Event] {
            let t = data_topic("ioc", "phuong-tan-phong", "ups1", kind);
            assert_eq!(
                Topic::parse("ioc", &t),
                Ok(Topic::Data {
                    site: "phuong-tan-phong",
                    device: "ups1",
                    kind
                })
            );
        }
        let t = status_topic("ioc", "phuong-tan-phong");
        assert_eq!(
            Topic::parse("ioc", &t),
            Ok(Topic::Status {
                site: "phuong-tan-phong"
            })
        );
    }
}
