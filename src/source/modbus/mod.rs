//! Modbus RTU and TCP sensors and meters (`type = "modbus"`), through
//! tokio-modbus. Register maps come from config or a built-in profile;
//! registers that sit together are read in one request; devices naming
//! the same bus take turns on it (see `bus`).

pub(crate) mod bus;
pub(crate) mod config;
pub mod map;
pub(crate) mod profile;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use self::bus::{Bus, ModbusError, Reply};
use self::config::ModbusConfig;
use self::map::{Block, Decoded, RegisterConfig};
use super::supervisor::{self, Action, Device, Fail, Policy};
use super::DeviceHandle;
use crate::model::Values;

/// Failed polls in a row (timeouts, garbled replies) before the device is
/// faulted. An exception or a port that cannot be opened faults at once:
/// waiting will not change it.
const FAULT_AFTER: u32 = 3;

pub(crate) struct Poller {
    cfg: ModbusConfig,
    regs: Vec<RegisterConfig>,
    blocks: Vec<Block>,
    bus: Arc<Bus>,
}

/// What one poll gave.
#[derive(Debug, Default)]
pub(crate) struct Poll {
    pub values: Values,
    pub errors: Vec<ModbusError>,
    /// Registers whose words could not be decoded (NaN, short reply).
    pub bad_values: Vec<(String, String)>,
}

impl Poller {
    pub(crate) fn new(cfg: ModbusConfig, bus: Arc<Bus>) -> Self {
        let regs = cfg.all_registers();
        let blocks = map::plan(&regs);
        Poller {
            cfg,
            regs,
            blocks,
            bus,
        }
    }

    pub(crate) async fn poll(&self) -> Poll {
        let mut out = Poll::default();
        let unit = self.cfg.unit_id();
        for b in &self.blocks {
            match self
                .bus
                .read(unit, b, self.cfg.timeout.get(), self.cfg.gap.get())
                .await
            {
                Ok(reply) => {
                    for &(i, off) in &b.fields {
                        let Some(r) = self.regs.get(i) else { continue };
                        let d = match &reply {
                            Reply::Words(w) => {
                                map::decode_words(r, w.get(usize::from(off)..).unwrap_or(&[]))
                            }
                            Reply::Bits(bits) => map::decode_bit(bits, off),
                        };
                        match d {
                            Ok(Decoded::Num(x)) => {
                                out.values.num(&r.name, x);
                            }
                            Ok(Decoded::Bool(x)) => out.values.set(&r.name, x),
                            Err(e) => out.bad_values.push((r.name.clone(), e.to_string())),
                        }
                    }
                }
                Err(e) => {
                    // A silent slave will not answer the next request
                    // either: leave the bus to the others.
                    let give_up = !matches!(e, ModbusError::Exception { .. });
                    out.errors.push(e);
                    if give_up {
                        break;
                    }
                }
            }
        }
        out
    }
}

/// What the supervisor keeps of a Modbus device: its poller (the bus opens
/// and reopens its own link, shared with the other slaves on it) and the
/// exceptions already reported.
struct Slave {
    poller: Poller,
    reported_exceptions: Vec<String>,
}

impl Device for Slave {
    type Conn = ();

    async fn open(&mut self, _h: &DeviceHandle) -> Result<(), Fail> {
        Ok(())
    }

    async fn poll(&mut self, _: &mut (), h: &DeviceHandle) -> Result<(), Fail> {
        let p = self.poller.poll().await;
        for e in &p.errors {
            h.count_error(e.kind());
            tracing::debug!(device = h.id(), error = %e, "modbus request failed");
        }
        for (name, e) in &p.bad_values {
            h.count_error("bad_value");
            tracing::warn!(device = h.id(), value = %name, error = %e, "bad Modbus value left out");
        }
        if !p.values.is_empty() {
            h.sample(p.values);
            // Part of the map failed: say so once, not on every poll.
            let exceptions: Vec<String> = p
                .errors
                .iter()
                .filter(|e| matches!(e, ModbusError::Exception { .. }))
                .map(|e| e.to_string())
                .collect();
            if exceptions != self.reported_exceptions {
                for e in exceptions
                    .iter()
                    .filter(|e| !self.reported_exceptions.contains(e))
                {
                    let mut v = Values::new();
                    v.set("reason", e.as_str());
                    h.report(
                        crate::events::MODBUS_EXCEPTION,
                        &[("device", &h.id()), ("reason", &e)],
                        v,
                    );
                }
                self.reported_exceptions = exceptions;
            }
            Ok(())
        } else if let Some(e) = p.errors.first() {
            // An exception or a port that cannot be opened faults at once:
            // waiting will not change it. Errors are counted above.
            let at_once = matches!(e, ModbusError::Exception { .. } | ModbusError::Open(_));
            let action = if at_once {
                Action::Fault
            } else {
                Action::Streak
            };
            Err(Fail::new(action, None, e.to_string()))
        } else if !p.bad_values.is_empty() {
            Err(Fail::new(
                Action::Fault,
                None,
                format!(
                    "no usable value ({})",
                    p.bad_values
                        .iter()
                        .map(|(n, e)| format!("{n}: {e}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        } else {
            Ok(())
        }
    }
}

/// Polls every interval; after [`FAULT_AFTER`] failed polls in a row the
/// device is faulted (lost first, if it was still ok).
pub(crate) async fn run(
    cfg: ModbusConfig,
    bus: Arc<Bus>,
    h: DeviceHandle,
    cancel: CancellationToken,
) {
    let policy = Policy {
        streak: FAULT_AFTER,
        ..Policy::new(cfg.interval)
    };
    let slave = Slave {
        poller: Poller::new(cfg, bus),
        reported_exceptions: Vec::new(),
    };
    supervisor::run(slave, policy, h, cancel).await
}

/// One poll, for `wardgate check`: the values, or the first error when
/// nothing could be read.
pub(crate) async fn probe(cfg: &ModbusConfig) -> Result<Values, ModbusError> {
    let bus = Bus::for_device(cfg);
    let p = Poller::new(cfg.clone(), bus).poll().await;
    if p.values.is_empty() {
        if let Some(e) = p.errors.first() {
            return Err(e.clone());
        }
    }
    let mut v = p.values;
    for e in p.errors {
        v.set(&format!("error.{}", e.kind()), e.to_string());
    }
    Ok(v)
}
