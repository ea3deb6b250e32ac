//! The sender's one MQTT connection: subscribe to the site's inventory and
//! the request's reply topic, publish the request once the site is known,
//! print each reply, stop at the final one or when the time is up.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Packet, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use serde::Deserialize;
use tokio::time::Instant;
use wardgate_contract::command::inventory_topic;
use wardgate_contract::{Reply, ReplyStatus, Request};

use super::SendError;
use crate::config::MqttConfig;
use crate::ingest::mqtt;

/// How long the connection and the subscription may take.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// How long after the subscription a retained inventory may still come:
/// mosquitto sends it at once; a broker that sends it later gets this.
const INVENTORY_GRACE: Duration = Duration::from_secs(1);

/// How the command ended, when a final reply came.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    Successful,
    Refused {
        status: &'static str,
        reason: String,
    },
}

/// What the retained inventory says about commands (the fields read;
/// others are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
struct Inventory {
    site: String,
    #[serde(default)]
    commands: Option<Commands>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Commands {
    enabled: bool,
    #[serde(default)]
    allow: Vec<String>,
}

/// Where the inventory stands.
#[derive(Debug)]
enum Known {
    /// Subscribed or not yet; none seen.
    Waiting,
    /// The broker refused the inventory's subscription (the ACL): the
    /// site cannot be checked; the request is sent all the same.
    Unreadable,
    Seen(Inventory),
}

pub(super) struct Session {
    client: AsyncClient,
    el: EventLoop,
    site: String,
    request: Request,
    request_topic: String,
    reply_topic: String,
    inventory_topic: String,
    payload: Vec<u8>,
    json: bool,
    known: Known,
    /// When the reply topic's subscription was granted (the first time).
    subscribed: Option<Instant>,
    published: bool,
    seen: BTreeSet<(ReplyStatus, bool)>,
    last: Option<ReplyStatus>,
}

impl Session {
    pub(super) fn new(
        m: &MqttConfig,
        site: &str,
        request: &Request,
        payload: Vec<u8>,
        json: bool,
    ) -> Result<Session, SendError> {
        let short: String = request.id.chars().take(8).collect();
        let client_id = format!("{}-send-{short}", m.client_id);
        let mut opts =
            mqtt::options(m, &client_id, true).map_err(|e| SendError::Broker(e.to_string()))?;
        opts.set_manual_acks(false);
        let (client, el) = AsyncClient::new(opts, 16);
        Ok(Session {
            client,
            el,
            site: site.to_owned(),
            request_topic: request.topic(&m.prefix, site),
            reply_topic: request.reply_topic(&m.prefix, site),
            inventory_topic: inventory_topic(&m.prefix, site),
            request: request.clone(),
            payload,
            json,
            known: Known::Waiting,
            subscribed: None,
            published: false,
            seen: BTreeSet::new(),
            last: None,
        })
    }

    /// Runs until a final reply or `wait` after the request went out.
    /// `note` is printed on `err` once the request is sent.
    pub(super) async fn run(
        &mut self,
        wait: Duration,
        note: &str,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<Outcome, SendError> {
        let started = Instant::now();
        let r = self.drive(started, wait, note, out, err).await;
        // Let the disconnect go out (a clean end, no last will to fire).
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match self.el.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        r
    }

    async fn drive(
        &mut self,
        started: Instant,
        wait: Duration,
        note: &str,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<Outcome, SendError> {
        let mut sent_at: Option<Instant> = None;
        loop {
            let deadline = match (sent_at, self.subscribed) {
                (Some(t), _) => t + wait,
                (None, Some(t)) => t + INVENTORY_GRACE,
                (None, None) => started + CONNECT_WITHIN,
            };
            let ev = tokio::select! {
                ev = self.el.poll() => Some(ev),
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let Some(ev) = ev else {
                match (sent_at, self.subscribed) {
                    (Some(_), _) => return Err(self.no_reply(wait)),
                    // The grace for the inventory is over: known or not.
                    (None, Some(_)) => {
                        self.publish(note, err)?;
                        sent_at = Some(Instant::now());
                        continue;
                    }
                    (None, None) => {
                        return Err(SendError::Broker(format!(
                            "no connection to the broker within {} s",
                            CONNECT_WITHIN.as_secs()
                        )))
                    }
                }
            };
            match ev {
                Ok(ev) => {
                    if let Some(done) = self.event(ev, out, err)? {
                        return Ok(done);
                    }
                }
                Err(e) if self.subscribed.is_none() => return Err(broker_down(e)),
                Err(e) => {
                    // rumqttc reconnects on the next poll (a clean session:
                    // the subscription is made again at the ConnAck).
                    let _ = writeln!(
                        err,
                        "wardgate-ioc send: connection lost ({e}); reconnecting"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            let ready = self.subscribed.is_some() && !matches!(self.known, Known::Waiting);
            if sent_at.is_none() && ready {
                self.publish(note, err)?;
                sent_at = Some(Instant::now());
            }
        }
    }

    /// One event; a final reply ends the session.
    fn event(
        &mut self,
        ev: Event,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<Option<Outcome>, SendError> {
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                let filters = [&self.inventory_topic, &self.reply_topic]
                    .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                self.client
                    .try_subscribe_many(filters)
                    .map_err(|e| SendError::Broker(format!("cannot subscribe: {e}")))?;
            }
            Event::Incoming(Packet::SubAck(s)) => {
                let refused = |i: usize| {
                    matches!(
                        s.return_codes.get(i),
                        Some(SubscribeReasonCode::Failure) | None
                    )
                };
                if refused(1) {
                    return Err(SendError::Broker(format!(
                        "the broker refused the subscription to {} (its ACL: the sender's account needs read on <prefix>/+/cmd/+/+/reply)",
                        self.reply_topic
                    )));
                }
                if refused(0) && matches!(self.known, Known::Waiting) {
                    let _ = writeln!(
                        err,
                        "wardgate-ioc send: the broker refused {} (ACL): the site is not checked",
                        self.inventory_topic
                    );
                    self.known = Known::Unreadable;
                }
                self.subscribed.get_or_insert_with(Instant::now);
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == self.inventory_topic => {
                self.inventory(&p.payload, err)?;
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == self.reply_topic => {
                return self.reply(&p.payload, out, err);
            }
            _ => {}
        }
        Ok(None)
    }

    fn inventory(&mut self, payload: &[u8], err: &mut dyn Write) -> Result<(), SendError> {
        if payload.is_empty() {
            // A retained inventory being cleared: as if none.
            return Ok(());
        }
        let inv: Inventory = match serde_json::from_slice(payload) {
            Ok(i) => i,
            Err(e) => {
                let _ = writeln!(
                    err,
                    "wardgate-ioc send: the inventory of {} is not the contract's ({e}); sending all the same",
                    self.site
                );
                Inventory {
                    site: self.site.clone(),
                    commands: None,
                }
            }
        };
        if let Some(c) = &inv.commands {
            if !c.enabled && !self.published {
                return Err(SendError::Refused(format!(
                    "{} takes no commands: its inventory says [commands] enabled = false (nothing sent)",
                    self.site
                )));
            }
            if !c.allow.iter().any(|o| o == &self.request.op) && !self.published {
                let _ = writeln!(
                    err,
                    "wardgate-ioc send: {}'s inventory does not allow {} ([commands] allow: {}): expect a rejection",
                    self.site,
                    self.request.op,
                    c.allow.join(", ")
                );
            }
        }
        self.known = Known::Seen(inv);
        Ok(())
    }

    fn publish(&mut self, note: &str, err: &mut dyn Write) -> Result<(), SendError> {
        if matches!(self.known, Known::Waiting) {
            return Err(SendError::UnknownSite(format!(
                "unknown site {}: the broker has no retained inventory on {} (every gateway publishes one when it connects); nothing sent. Check the id (wardgate-ioc fleet) and mqtt.prefix",
                self.site, self.inventory_topic
            )));
        }
        if let Known::Seen(inv) = &self.known {
            if inv.site != self.site {
                let _ = writeln!(
                    err,
                    "wardgate-ioc send: the inventory on {} names site {:?}",
                    self.inventory_topic, inv.site
                );
            }
        }
        self.client
            .try_publish(
                self.request_topic.clone(),
                QoS::AtLeastOnce,
                false,
                self.payload.clone(),
            )
            .map_err(|e| SendError::Broker(format!("cannot publish: {e}")))?;
        self.published = true;
        let _ = writeln!(err, "wardgate-ioc send: sent {note}");
        Ok(())
    }

    /// One reply: printed once per status; a final one ends the session.
    fn reply(
        &mut self,
        payload: &[u8],
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<Option<Outcome>, SendError> {
        let r = match Reply::decode(payload) {
            Ok(r) if r.id == self.request.id => r,
            Ok(r) => {
                let _ = writeln!(err, "wardgate-ioc send: a reply for id {} ignored", r.id);
                return Ok(None);
            }
            Err(e) => {
                let _ = writeln!(err, "wardgate-ioc send: {e}; ignored");
                return Ok(None);
            }
        };
        // At least once: a copy of a status already printed says nothing new.
        if !self.seen.insert((r.status, r.replayed)) {
            return Ok(None);
        }
        self.last = Some(r.status);
        print_reply(&r, self.json, out).map_err(|e| SendError::Broker(format!("stdout: {e}")))?;
        Ok(match r.status {
            ReplyStatus::Successful => Some(Outcome::Successful),
            s if s.is_final() => Some(Outcome::Refused {
                status: s.as_str(),
                reason: r.reason.unwrap_or_default(),
            }),
            _ => None,
        })
    }

    fn no_reply(&self, wait: Duration) -> SendError {
        let waited = humantime::format_duration(wait);
        SendError::NoReply(match self.last {
            None => format!(
                "no reply from {} within {waited}: its gateway is offline, takes no commands from this broker, or the link is slow (wardgate-ioc fleet shows when it was last heard). The request was not retained: it is not delivered later, and expires anyway",
                self.site
            ),
            Some(s) => format!(
                "{} said {} but no final reply came within {waited}: the command may still finish (replies go through the gateway's spool and arrive later)",
                self.site,
                s.as_str()
            ),
        })
    }
}

fn broker_down(e: ConnectionError) -> SendError {
    SendError::Broker(format!("the broker: {e}"))
}

/// A reply in words (`accepted`, `rejected: <why>`, `successful` and the
/// result as indented JSON), or as one line of JSON.
fn print_reply(r: &Reply, json: bool, out: &mut dyn Write) -> std::io::Result<()> {
    if json {
        out.write_all(&r.to_vec())?;
        writeln!(out)?;
        return out.flush();
    }
    let replayed = if r.replayed {
        " (replayed: the stored reply, the op did not run again)"
    } else {
        ""
    };
    match &r.reason {
        Some(why) => writeln!(out, "{}{replayed}: {why}", r.status.as_str())?,
        None => writeln!(out, "{}{replayed}", r.status.as_str())?,
    }
    if let Some(result) = &r.result {
        let text = serde_json::to_string_pretty(result).unwrap_or_else(|_| result.to_string());
        writeln!(out, "{text}")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_in_words_and_in_json() {
        let ok = Reply::decode(
            br#"{"id":"c1","op":"poll","status":"successful","reason":null,"result":{"device":"ups1"},"ts":5,"replayed":false}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        print_reply(&ok, false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "successful\n{\n  \"device\": \"ups1\"\n}\n"
        );
        let mut out = Vec::new();
        print_reply(&ok, true, &mut out).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.lines().count(), 1);
        assert_eq!(Reply::decode(line.trim().as_bytes()).unwrap(), ok);

        let no = Reply::decode(
            br#"{"id":"c1","op":"x","status":"rejected","reason":"unknown op \"x\"","result":null,"ts":5,"replayed":true}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        print_reply(&no, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("rejected (replayed"), "{text}");
        assert!(text.ends_with(": unknown op \"x\"\n"), "{text}");
    }
}
