//! The ward's router over SNMP v2c (`type = "snmp"`): uptime, name, and for
//! each configured interface its operational status, traffic in bit/s from
//! the octet counters, and error counters. Interface down/up changes are
//! events; the WAN interface's are critical `wan.down` / `wan.up`.
//!
//! Client: the `csnmp` crate (async tokio, v2c only, small dependency set).
//! `snmp2` also covers v3, which pulls in crypto crates we do not need for
//! a community-string read of a router on the LAN. Numeric OIDs only: no
//! MIB files on the Pi.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

pub use csnmp::ObjectValue;
use csnmp::{ObjectIdentifier, Snmp2cClient};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::snmp_config::{IfRef, SnmpConfig};
use super::supervisor::{self, Action, Device, Fail, Policy};
use super::DeviceHandle;
use crate::events;
use crate::model::Values;

const SYS_UPTIME: &str = "1.3.6.1.2.1.1.3.0";
const SYS_NAME: &str = "1.3.6.1.2.1.1.5.0";
const IF_DESCR: &str = "1.3.6.1.2.1.2.2.1.2";
const IF_OPER_STATUS: &str = "1.3.6.1.2.1.2.2.1.8";
const IF_IN_OCTETS: &str = "1.3.6.1.2.1.2.2.1.10";
const IF_IN_ERRORS: &str = "1.3.6.1.2.1.2.2.1.14";
const IF_OUT_OCTETS: &str = "1.3.6.1.2.1.2.2.1.16";
const IF_OUT_ERRORS: &str = "1.3.6.1.2.1.2.2.1.20";
const IF_NAME: &str = "1.3.6.1.2.1.31.1.1.1.1";
const IF_HC_IN_OCTETS: &str = "1.3.6.1.2.1.31.1.1.1.6";
const IF_HC_OUT_OCTETS: &str = "1.3.6.1.2.1.31.1.1.1.10";

/// Most rows read from one column of the interface table. A large router
/// has a few hundred interfaces (VLANs, tunnels, PPP sessions); an agent
/// listing more is broken or hostile, and csnmp's own walk has no end.
pub(crate) const MAX_TABLE_ROWS: usize = 2048;

/// Interface names quoted in a "not found" reason, each at most 64
/// characters.
const NAMES_QUOTED: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum SnmpError {
    /// No answer: wrong community (agents stay silent), SNMP off, router
    /// down or address wrong. The device is faulted; retried each interval.
    #[error("no answer from {0} (wrong community, SNMP not enabled, or the router is down)")]
    NoAnswer(String),
    /// A configured interface is not on the router: faulted with the list
    /// of names it has.
    #[error("interface {wanted} not found on the router (it has: {have})")]
    NoSuchInterface { wanted: String, have: String },
    /// Anything else the agent or the socket said: faulted with the reason.
    #[error("{0}")]
    Other(String),
    /// The agent's reply went past a limit ([`MAX_TABLE_ROWS`]): counted as
    /// `limit`, faulted naming the limit, looked up again next interval.
    #[error("the router sent {0}")]
    Limit(String),
}

fn oid(s: &str) -> ObjectIdentifier {
    // The constants above are valid numeric OIDs.
    s.parse().expect("numeric OID constant")
}

fn column(base: &str, index: u32) -> ObjectIdentifier {
    oid(&format!("{base}.{index}"))
}

/// `ifOperStatus` in words (RFC 2863).
pub(crate) fn oper_word(v: i32) -> &'static str {
    match v {
        1 => "up",
        2 => "down",
        3 => "testing",
        5 => "dormant",
        6 => "not_present",
        7 => "lower_layer_down",
        _ => "unknown",
    }
}

/// An interface name made fit for a value name (`GigabitEthernet0/1` ->
/// `GigabitEthernet0_1`).
pub fn value_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether the router restarted between two readings of sysUpTime
/// (hundredths of a second, wrapping at 2^32 after 497 days).
/// `elapsed_ticks` is the local time between the readings.
pub fn restarted(prev: u32, now: u32, elapsed_ticks: u64) -> bool {
    if now >= prev {
        return false;
    }
    // Gone back: a wrap if the previous reading was close enough to 2^32
    // that the elapsed time carries it past, else a restart.
    let slack = elapsed_ticks * 2 + 6_000;
    let to_wrap = u64::from(u32::MAX - prev) + 1;
    !(to_wrap <= slack && u64::from(now) <= slack)
}

/// Bits per second from two readings of an octet counter `width` bits
/// wide. None when no rate can be given: first reading, the router
/// restarted, or a 64-bit counter went back (reset, not a wrap).
pub fn rate_bps(prev: u64, now: u64, width: u32, secs: f64, restarted: bool) -> Option<f64> {
    if restarted || secs <= 0.0 {
        return None;
    }
    let delta = if now >= prev {
        now - prev
    } else if width == 32 && prev <= u64::from(u32::MAX) {
        now + (1u64 << 32) - prev
    } else {
        return None;
    };
    Some((delta as f64 * 8.0 / secs).round())
}

/// What wardgate keeps about one configured interface between polls.
#[derive(Debug, Clone)]
pub struct IfState {
    /// The interface's name made fit for a value name ([`value_key`]).
    pub key: String,
    pub index: u32,
    pub is_wan: bool,
    /// ifOperStatus at the last poll.
    pub oper: Option<i32>,
    /// in, out, counter width at the last poll.
    pub last: Option<(u64, u64, u32)>,
}

/// What one poll read for one interface: the agent's values (None when it
/// did not return one).
#[derive(Debug, Clone, Default)]
pub struct IfReading {
    pub oper: Option<ObjectValue>,
    pub in_errors: Option<ObjectValue>,
    pub out_errors: Option<ObjectValue>,
    /// Counter width (64 from ifXTable, 32 from ifTable), in and out
    /// octets; None when neither table answered.
    pub counters: Option<(u32, Option<ObjectValue>, Option<ObjectValue>)>,
}

/// sysUpTime.0 in hundredths of a second; anything but TimeTicks is an
/// error naming what came.
pub fn uptime_ticks(v: Option<&ObjectValue>) -> Result<u32, SnmpError> {
    match v {
        Some(ObjectValue::TimeTicks(t)) => Ok(*t),
        other => Err(SnmpError::Other(format!("sysUpTime.0 is {other:?}"))),
    }
}

/// The system values: uptime in seconds and the router's name.
pub fn map_system(uptime: u32, name: Option<&ObjectValue>, v: &mut Values) {
    v.num("sys.uptime", f64::from(uptime / 100));
    if let Some(n) = name.and_then(text) {
        v.set("sys.name", n);
    }
}

/// Maps one interface's reading to values and link changes, and updates
/// what is kept for the next poll. `secs` is the time since the last poll,
/// `restart` whether the router restarted since. Pure, so it is fuzzed
/// (`fuzz/fuzz_targets/snmp.rs`).
pub fn map_interface(
    st: &mut IfState,
    r: &IfReading,
    secs: f64,
    restart: bool,
    v: &mut Values,
    changes: &mut Vec<Change>,
) {
    let k = st.key.clone();
    if let Some(ObjectValue::Integer(o)) = &r.oper {
        v.set(&format!("if.{k}.oper"), oper_word(*o));
        v.set(&format!("if.{k}.up"), *o == 1);
        let was = st.oper.replace(*o);
        let now_up = *o == 1;
        match was {
            Some(w) if (w == 1) != now_up => changes.push(Change::Link {
                name: k.clone(),
                up: now_up,
                wan: st.is_wan,
                word: oper_word(*o),
            }),
            // A WAN found down at start is an alarm too.
            None if !now_up && st.is_wan => changes.push(Change::Link {
                name: k.clone(),
                up: false,
                wan: true,
                word: oper_word(*o),
            }),
            _ => {}
        }
    }
    for (x, name) in [(&r.in_errors, "in_errors"), (&r.out_errors, "out_errors")] {
        if let Some(n) = x.as_ref().and_then(|x| x.as_u32()) {
            v.num(&format!("if.{k}.{name}"), f64::from(n));
        }
    }
    if let Some((width, inn, out)) = &r.counters {
        let rd = |x: &Option<ObjectValue>| x.as_ref().and_then(|x| x.as_u64());
        if let (Some(inn), Some(out)) = (rd(inn), rd(out)) {
            if let Some((pi, po, pw)) = st.last {
                if pw == *width {
                    if let Some(r) = rate_bps(pi, inn, *width, secs, restart) {
                        v.num(&format!("if.{k}.in_bps"), r);
                    }
                    if let Some(r) = rate_bps(po, out, *width, secs, restart) {
                        v.num(&format!("if.{k}.out_bps"), r);
                    }
                }
            }
            st.last = Some((inn, out, *width));
        }
    }
}

struct Router {
    client: Snmp2cClient,
    target: String,
    ifs: Vec<IfState>,
    last_uptime: Option<(u32, Instant)>,
}

async fn connect(cfg: &SnmpConfig) -> Result<Snmp2cClient, SnmpError> {
    let port = cfg.port.get();
    let target: SocketAddr = tokio::net::lookup_host((cfg.host.as_str(), port))
        .await
        .map_err(|e| SnmpError::Other(format!("{}: {e}", cfg.host)))?
        .next()
        .ok_or_else(|| SnmpError::Other(format!("{}: no address", cfg.host)))?;
    let bind: SocketAddr = if target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    Snmp2cClient::new(
        target,
        cfg.community.as_bytes().to_vec(),
        Some(bind),
        Some(cfg.timeout.get()),
        cfg.retries.as_usize(),
    )
    .await
    .map_err(|e| SnmpError::Other(e.to_string()))
}

fn client_error(target: &str, e: csnmp::SnmpClientError) -> SnmpError {
    match e {
        csnmp::SnmpClientError::TimedOut => SnmpError::NoAnswer(target.to_owned()),
        e => SnmpError::Other(format!("{target}: {e}")),
    }
}

fn text(v: &ObjectValue) -> Option<String> {
    v.as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

impl Router {
    async fn new(cfg: &SnmpConfig) -> Result<Router, SnmpError> {
        let client = connect(cfg).await?;
        let mut r = Router {
            client,
            target: format!("{}:{}", cfg.host, cfg.port),
            ifs: Vec::new(),
            last_uptime: None,
        };
        r.resolve(cfg).await?;
        Ok(r)
    }

    /// Finds each configured interface's ifIndex (again after a restart:
    /// indexes may change).
    async fn resolve(&mut self, cfg: &SnmpConfig) -> Result<(), SnmpError> {
        let wanted: Vec<&IfRef> = {
            let mut w: Vec<&IfRef> = cfg.interfaces.iter().collect();
            if let Some(wan) = &cfg.wan {
                if !w.contains(&wan) {
                    w.push(wan);
                }
            }
            w
        };
        if wanted.is_empty() {
            self.ifs.clear();
            return Ok(());
        }
        let mut names: BTreeMap<u32, String> = BTreeMap::new();
        for base in [IF_NAME, IF_DESCR] {
            for (o, v) in self.walk(base).await? {
                if let (Some(i), Some(n)) = (o.as_slice().last(), text(&v)) {
                    names.entry(*i).or_insert(n);
                }
            }
            if !names.is_empty() {
                break;
            }
        }
        let mut ifs = Vec::new();
        for w in wanted {
            let found = match w {
                IfRef::Index(i) => u32::try_from(*i)
                    .ok()
                    .map(|i| (i, names.get(&i).cloned().unwrap_or(format!("if{i}")))),
                IfRef::Name(n) => names
                    .iter()
                    .find(|(_, name)| *name == n)
                    .map(|(i, name)| (*i, name.clone())),
            };
            let Some((index, name)) = found else {
                let mut have: Vec<String> = names
                    .values()
                    .take(NAMES_QUOTED)
                    .map(|n| super::cut(n, 64).into_owned())
                    .collect();
                if names.len() > NAMES_QUOTED {
                    have.push(format!("and {} more", names.len() - NAMES_QUOTED));
                }
                return Err(SnmpError::NoSuchInterface {
                    wanted: w.to_string(),
                    have: have.join(", "),
                });
            };
            let old = self.ifs.iter().find(|s| s.index == index);
            ifs.push(IfState {
                key: value_key(&name),
                index,
                is_wan: cfg.wan.as_ref() == Some(w),
                oper: old.and_then(|o| o.oper),
                last: None,
            });
        }
        self.ifs = ifs;
        Ok(())
    }

    /// The rows of one table column, at most [`MAX_TABLE_ROWS`] (GETBULK,
    /// 16 at a time, until the agent leaves the column).
    async fn walk(&self, base: &str) -> Result<BTreeMap<ObjectIdentifier, ObjectValue>, SnmpError> {
        let top = oid(base);
        let mut out = BTreeMap::new();
        let mut cur = top;
        loop {
            let r = self
                .client
                .get_bulk(&[cur], 0, 16)
                .await
                .map_err(|e| client_error(&self.target, e))?;
            let mut moved = false;
            for (o, v) in r.values {
                // csnmp refuses OIDs that go back; one that does not move
                // on ends the walk all the same.
                if !top.is_prefix_of_or_equal(&o) || o <= cur {
                    return Ok(out);
                }
                if out.len() >= MAX_TABLE_ROWS {
                    return Err(SnmpError::Limit(format!(
                        "more than {MAX_TABLE_ROWS} rows of {base}"
                    )));
                }
                out.insert(o, v);
                cur = o;
                moved = true;
            }
            if r.end_of_mib_view || !moved {
                return Ok(out);
            }
        }
    }

    async fn get(
        &self,
        oids: Vec<ObjectIdentifier>,
    ) -> Result<HashMap<ObjectIdentifier, ObjectValue>, SnmpError> {
        self.client
            .get_multiple(oids)
            .await
            .map(|m| m.into_iter().collect())
            .map_err(|e| client_error(&self.target, e))
    }

    /// One reading: values, and the interface changes worth an event.
    async fn poll(&mut self, cfg: &SnmpConfig) -> Result<(Values, Vec<Change>), SnmpError> {
        let sys = self.get(vec![oid(SYS_UPTIME), oid(SYS_NAME)]).await?;
        let now = Instant::now();
        let uptime = uptime_ticks(sys.get(&oid(SYS_UPTIME)))?;
        let mut changes = Vec::new();
        let restart = self
            .last_uptime
            .is_some_and(|(prev, at)| restarted(prev, uptime, (now - at).as_millis() as u64 / 10));
        if restart {
            changes.push(Change::Restarted);
            self.resolve(cfg).await?;
        }
        let secs = self
            .last_uptime
            .map(|(_, at)| (now - at).as_secs_f64())
            .unwrap_or(0.0);
        self.last_uptime = Some((uptime, now));
        let mut v = Values::new();
        map_system(uptime, sys.get(&oid(SYS_NAME)), &mut v);
        for i in 0..self.ifs.len() {
            let index = self.ifs[i].index;
            let mut basic = self
                .get(vec![
                    column(IF_OPER_STATUS, index),
                    column(IF_IN_ERRORS, index),
                    column(IF_OUT_ERRORS, index),
                ])
                .await?;
            // 64-bit counters where the agent has them (ifXTable), else the
            // 32-bit ones, which wrap every 34 s at 1 Gbit/s.
            let counters = match self
                .get(vec![
                    column(IF_HC_IN_OCTETS, index),
                    column(IF_HC_OUT_OCTETS, index),
                ])
                .await
            {
                Ok(m) => Some((m, 64, IF_HC_IN_OCTETS, IF_HC_OUT_OCTETS)),
                Err(SnmpError::Other(_)) => self
                    .get(vec![
                        column(IF_IN_OCTETS, index),
                        column(IF_OUT_OCTETS, index),
                    ])
                    .await
                    .ok()
                    .map(|m| (m, 32, IF_IN_OCTETS, IF_OUT_OCTETS)),
                Err(e) => return Err(e),
            };
            let reading = IfReading {
                oper: basic.remove(&column(IF_OPER_STATUS, index)),
                in_errors: basic.remove(&column(IF_IN_ERRORS, index)),
                out_errors: basic.remove(&column(IF_OUT_ERRORS, index)),
                counters: counters.map(|(mut m, width, in_col, out_col)| {
                    (
                        width,
                        m.remove(&column(in_col, index)),
                        m.remove(&column(out_col, index)),
                    )
                }),
            };
            map_interface(
                &mut self.ifs[i],
                &reading,
                secs,
                restart,
                &mut v,
                &mut changes,
            );
        }
        Ok((v, changes))
    }
}

/// A change worth an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Restarted,
    Link {
        name: String,
        up: bool,
        wan: bool,
        word: &'static str,
    },
}

fn error_kind(e: &SnmpError) -> &'static str {
    match e {
        SnmpError::NoAnswer(_) => "timeout",
        SnmpError::NoSuchInterface { .. } => "interface",
        SnmpError::Other(_) => "snmp",
        SnmpError::Limit(_) => "limit",
    }
}

/// What the supervisor needs of the router: its config; the link is a
/// [`Router`] with the interfaces looked up.
struct Agent {
    cfg: SnmpConfig,
}

impl Device for Agent {
    type Conn = Router;

    async fn open(&mut self, _h: &DeviceHandle) -> Result<Router, Fail> {
        Router::new(&self.cfg)
            .await
            .map_err(|e| Fail::new(Action::Reopen, Some(error_kind(&e)), e.to_string()))
    }

    async fn poll(&mut self, r: &mut Router, h: &DeviceHandle) -> Result<(), Fail> {
        match r.poll(&self.cfg).await {
            Ok((v, changes)) => {
                for c in changes {
                    report(h, c);
                }
                h.sample(v);
                Ok(())
            }
            // Silence: the router is kept, asked again next interval.
            Err(e @ SnmpError::NoAnswer(_)) => Err(Fail::new(
                Action::Fault,
                Some(error_kind(&e)),
                e.to_string(),
            )),
            // Look the interfaces up afresh next time.
            Err(e) => Err(Fail::new(
                Action::Reopen,
                Some(error_kind(&e)),
                e.to_string(),
            )),
        }
    }
}

/// Asks the router every interval; any failure faults the device at once.
pub(crate) async fn run(cfg: SnmpConfig, h: DeviceHandle, cancel: CancellationToken) {
    let policy = Policy::new(cfg.interval);
    supervisor::run(Agent { cfg }, policy, h, cancel).await
}

fn report(h: &DeviceHandle, c: Change) {
    let (ev, msg, mut v) = match c {
        Change::Restarted => (
            events::ROUTER_RESTARTED,
            events::ROUTER_RESTARTED.render(&[]),
            Values::new(),
        ),
        Change::Link {
            name,
            up,
            wan,
            word,
        } => {
            let mut v = Values::new();
            v.set("interface", name.as_str());
            v.set("oper", word);
            match (wan, up) {
                (true, false) => (
                    events::WAN_DOWN,
                    events::WAN_DOWN.render(&[("interface", &name), ("state", &word)]),
                    v,
                ),
                (true, true) => (
                    events::WAN_UP,
                    events::WAN_UP.render(&[("interface", &name)]),
                    v,
                ),
                (false, false) => (
                    events::INTERFACE_DOWN,
                    events::INTERFACE_DOWN.render(&[("interface", &name), ("state", &word)]),
                    v,
                ),
                (false, true) => (
                    events::INTERFACE_UP,
                    events::INTERFACE_UP.render(&[("interface", &name)]),
                    v,
                ),
            }
        }
    };
    v.set("source", "snmp");
    h.event(ev.severity, ev.code, &msg, v);
}

/// One reading, for `wardgate check`.
pub(crate) async fn probe(cfg: &SnmpConfig) -> Result<Values, SnmpError> {
    let mut r = Router::new(cfg).await?;
    r.poll(cfg).await.map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_and_uptime_wraps() {
        // 30 s between polls = 3000 ticks.
        assert!(!restarted(1_000, 4_000, 3_000));
        assert!(restarted(500_000, 1_200, 3_000));
        // sysUpTime wraps after 497 days: not a restart.
        assert!(!restarted(u32::MAX - 1_000, 1_900, 3_000));
        // A restart near the wrap point that lands far from zero is one.
        assert!(restarted(u32::MAX - 1_000, 900_000, 3_000));
    }

    #[test]
    fn counter_rates_wrap_and_reset() {
        // 1,250,000 octets in 10 s = 1 Mbit/s.
        assert_eq!(
            rate_bps(1_000, 1_251_000, 64, 10.0, false),
            Some(1_000_000.0)
        );
        // A 32-bit counter wrapped: 2^32 - 1000 -> 1_249_000.
        let prev = (1u64 << 32) - 1_000;
        assert_eq!(
            rate_bps(prev, 1_249_000, 32, 10.0, false),
            Some(1_000_000.0)
        );
        // A 64-bit counter going back is a reset: no rate.
        assert_eq!(rate_bps(5_000, 10, 64, 10.0, false), None);
        // After a router restart: no rate for this round.
        assert_eq!(rate_bps(1_000, 2_000, 64, 10.0, true), None);
        assert_eq!(rate_bps(1_000, 2_000, 64, 0.0, false), None);
    }

    #[test]
    fn words_and_keys() {
        assert_eq!(oper_word(1), "up");
        assert_eq!(oper_word(2), "down");
        assert_eq!(oper_word(7), "lower_layer_down");
        assert_eq!(oper_word(99), "unknown");
        assert_eq!(value_key("GigabitEthernet0/1"), "GigabitEthernet0_1");
        assert_eq!(value_key("pppoe-wan"), "pppoe-wan");
        assert!(crate::model::valid_value_name(&format!(
            "if.{}.in_bps",
            value_key("Port 1 (WAN)")
        )));
    }
}
