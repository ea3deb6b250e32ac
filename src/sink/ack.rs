//! Ties PUBACKs back to what was published: pure state, no I/O.
//!
//! Publishes enter rumqttc's request channel in order and leave it in the
//! same order, so the n-th `Outgoing::Publish(pkid)` belongs to the n-th
//! publish request (thin-edge's bridge relies on the same). A publish that
//! collides with a packet id still in flight is announced by
//! `Outgoing::AwaitAck` and leaves later, still in order, so the FIFO holds.
//! rumqttc reports an `Incoming::PubAck` before it reuses that packet id.

use std::collections::{HashMap, VecDeque};

/// What a publish request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// A spool batch: committed when acknowledged.
    Batch(u64),
    /// The retained birth message.
    Birth,
    /// The retained offline message of a clean stop.
    Offline,
    /// The retained inventory message.
    Inventory,
    /// A command reply that is not the last message of its batch: the
    /// batch is committed on the PUBACK of its last message (a broker
    /// acknowledges QoS 1 publishes in the order it received them).
    Part,
}

/// What a PUBACK acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acked {
    Tag(Tag),
    /// No publish is in flight under this packet id (a broker bug, or a
    /// duplicate PUBACK): nothing to commit.
    Unknown(u16),
}

/// What leaving the client did to the bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    Ok,
    /// A publish left with no request queued for it: its ack cannot be tied
    /// to anything. The caller ends the session (everything is sent again).
    Untagged(u16),
    /// The packet id was still in flight with another tag, whose ack can
    /// now never be told apart: the caller ends the session.
    Reused {
        pkid: u16,
        lost: Tag,
    },
}

#[derive(Debug, Default)]
pub(crate) struct AckTracker {
    /// Handed to the client, not yet given a packet id, oldest first.
    queued: VecDeque<Tag>,
    /// Sent, waiting for the broker's PUBACK.
    inflight: HashMap<u16, Tag>,
}

impl AckTracker {
    #[cfg_attr(not(test), allow(dead_code))] // used by the tests
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A publish request is about to be handed to the client. Call it
    /// before the request can reach the event loop.
    pub(crate) fn queue(&mut self, tag: Tag) {
        self.queued.push_back(tag);
    }

    /// The client refused the request just queued (it never entered the
    /// channel): forget its tag.
    pub(crate) fn unqueue_last(&mut self) -> Option<Tag> {
        self.queued.pop_back()
    }

    /// `Outgoing::Publish(pkid)`: the oldest queued request left under `pkid`.
    pub(crate) fn sent(&mut self, pkid: u16) -> Sent {
        let Some(tag) = self.queued.pop_front() else {
            return Sent::Untagged(pkid);
        };
        match self.inflight.insert(pkid, tag) {
            None => Sent::Ok,
            Some(lost) => Sent::Reused { pkid, lost },
        }
    }

    /// `Incoming::PubAck(pkid)`.
    pub(crate) fn acked(&mut self, pkid: u16) -> Acked {
        match self.inflight.remove(&pkid) {
            Some(tag) => Acked::Tag(tag),
            None => Acked::Unknown(pkid),
        }
    }

    /// Publishes queued or sent and not yet acknowledged.
    #[cfg_attr(not(test), allow(dead_code))] // used by the tests
    pub(crate) fn outstanding(&self) -> usize {
        self.queued.len() + self.inflight.len()
    }

    /// The connection is gone: nothing outstanding will be acknowledged.
    /// Returns the batches that were (the spool sends them again).
    pub(crate) fn connection_lost(&mut self) -> Vec<u64> {
        let mut batches: Vec<u64> = self
            .queued
            .drain(..)
            .chain(self.inflight.drain().map(|(_, t)| t))
            .filter_map(|t| match t {
                Tag::Batch(id) => Some(id),
                _ => None,
            })
            .collect();
        batches.sort_unstable();
        batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step of a scenario and what it must give.
    enum Step {
        Queue(Tag),
        Unqueue(Option<Tag>),
        Out(u16, Sent),
        Ack(u16, Acked),
        Lost(Vec<u64>),
        Outstanding(usize),
    }
    use Step::*;

    fn run(name: &str, steps: Vec<Step>) {
        let mut t = AckTracker::new();
        for (i, s) in steps.into_iter().enumerate() {
            match s {
                Queue(tag) => t.queue(tag),
                Unqueue(want) => assert_eq!(t.unqueue_last(), want, "{name}: step {i}"),
                Out(pkid, want) => assert_eq!(t.sent(pkid), want, "{name}: step {i}"),
                Ack(pkid, want) => assert_eq!(t.acked(pkid), want, "{name}: step {i}"),
                Lost(want) => assert_eq!(t.connection_lost(), want, "{name}: step {i}"),
                Outstanding(n) => assert_eq!(t.outstanding(), n, "{name}: step {i}"),
            }
        }
    }

    const B: fn(u64) -> Tag = Tag::Batch;

    #[test]
    fn scenarios() {
        let table: Vec<(&str, Vec<Step>)> = vec![
            (
                "birth then batches, acked out of order",
                vec![
                    Queue(Tag::Birth),
                    Queue(B(10)),
                    Queue(B(11)),
                    Out(1, Sent::Ok),
                    Out(2, Sent::Ok),
                    Out(3, Sent::Ok),
                    Ack(3, Acked::Tag(B(11))),
                    Ack(1, Acked::Tag(Tag::Birth)),
                    Ack(2, Acked::Tag(B(10))),
                    Outstanding(0),
                ],
            ),
            (
                "pkid reused after its ack belongs to the new batch",
                vec![
                    Queue(B(1)),
                    Out(1, Sent::Ok),
                    Ack(1, Acked::Tag(B(1))),
                    Queue(B(2)),
                    Out(1, Sent::Ok),
                    Ack(1, Acked::Tag(B(2))),
                    Ack(1, Acked::Unknown(1)),
                ],
            ),
            (
                "pkid reused while still in flight is reported",
                vec![
                    Queue(B(1)),
                    Queue(B(2)),
                    Out(7, Sent::Ok),
                    Out(
                        7,
                        Sent::Reused {
                            pkid: 7,
                            lost: B(1),
                        },
                    ),
                    Ack(7, Acked::Tag(B(2))),
                ],
            ),
            (
                "puback for an unknown pkid commits nothing",
                vec![
                    Queue(B(5)),
                    Out(1, Sent::Ok),
                    Ack(9, Acked::Unknown(9)),
                    Outstanding(1),
                    Ack(1, Acked::Tag(B(5))),
                ],
            ),
            (
                "a publish nobody queued",
                vec![Out(4, Sent::Untagged(4)), Ack(4, Acked::Unknown(4))],
            ),
            (
                "offline status at a clean stop, data acks still commit",
                vec![
                    Queue(B(1)),
                    Out(1, Sent::Ok),
                    Queue(Tag::Offline),
                    Out(2, Sent::Ok),
                    Ack(1, Acked::Tag(B(1))),
                    Ack(2, Acked::Tag(Tag::Offline)),
                ],
            ),
            (
                "connection lost: everything in flight and queued, no status",
                vec![
                    Queue(Tag::Birth),
                    Queue(B(3)),
                    Queue(B(4)),
                    Queue(B(5)),
                    Out(1, Sent::Ok),
                    Out(2, Sent::Ok),
                    Ack(1, Acked::Tag(Tag::Birth)),
                    Outstanding(3),
                    Lost(vec![3, 4, 5]),
                    Outstanding(0),
                    Ack(2, Acked::Unknown(2)),
                    // The next publish has nothing stale in front of it.
                    Queue(B(6)),
                    Out(1, Sent::Ok),
                    Ack(1, Acked::Tag(B(6))),
                ],
            ),
            (
                "a refused request is forgotten",
                vec![
                    Queue(B(1)),
                    Queue(B(2)),
                    Unqueue(Some(B(2))),
                    Out(1, Sent::Ok),
                    Out(2, Sent::Untagged(2)),
                    Ack(1, Acked::Tag(B(1))),
                    Unqueue(None),
                ],
            ),
        ];
        for (name, steps) in table {
            run(name, steps);
        }
    }
}
