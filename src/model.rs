//! The one data model every part of wardgate speaks: samples, events and
//! device health.
//!
//! The records that go on the wire (values, samples, events, clock state,
//! severity, kind, health, the id and name rules) are the MQTT contract's,
//! defined in the contract crate (`contract/`, `wardgate_contract`) that the
//! operations centre's consumer builds from too, and re-exported here so
//! that the gateway speaks of them as `crate::model::*`. What only the
//! gateway needs stays here: what a source hands to the spool, the wall
//! clock and the kernel's clock state.
//!
//! A source produces [`Values`]; the spool stamps them with the device's next
//! sequence number, the time and the clock state, and from then on the reading
//! travels as a [`Sample`] (or an [`Event`]) until a sink has it acknowledged.

pub use wardgate_contract::model::{
    valid_event_code, valid_id, valid_value_name, ClockState, Event, Health, Kind, Sample,
    Severity, Value, Values,
};

/// Reads the kernel's NTP state with `adjtimex(2)` (read-only: `modes = 0`).
/// `TIME_ERROR` or the `STA_UNSYNC` flag mean the clock is not synchronised.
pub fn kernel_clock_state() -> ClockState {
    if crate::clock::kernel_synced() {
        ClockState::Synced
    } else {
        ClockState::Unsynced
    }
}

pub use crate::clock::now_ms;

/// What a source hands to the spool: the spool stamps it with seq, ts and clock.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    Sample(Values),
    Event {
        severity: Severity,
        code: String,
        message: String,
        values: Values,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The event codes the contract's rules name are in the gateway's
    /// catalogue, spelt the same.
    #[test]
    fn the_contracts_codes_are_in_the_catalogue() {
        use crate::events;
        use wardgate_contract::codes;
        assert_eq!(events::GATEWAY_SEQUENCE_RESET.code, codes::SEQUENCE_RESET);
        assert_eq!(events::GATEWAY_UNCLEAN_STOP.code, codes::UNCLEAN_STOP);
        assert_eq!(events::GATEWAY_CLOCK_CORRECTED.code, codes::CLOCK_CORRECTED);
    }

    /// The kernel's NTP state read another way than `kernel_clock_state` does:
    /// `clock_adjtime(CLOCK_REALTIME)`, read-only (`modes = 0`).
    fn unsynced_per_clock_adjtime() -> bool {
        // SAFETY: `timex` is plain old data; with `modes == 0` the call only
        // reads the kernel state into it.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::clock_adjtime(libc::CLOCK_REALTIME, &mut tx) };
        assert_ne!(rc, -1, "clock_adjtime: {}", std::io::Error::last_os_error());
        rc == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0
    }

    #[test]
    fn kernel_clock_state_matches_the_kernel() {
        // Read the kernel before and after; when both agree (ntpd may flip
        // the state in between, then try again), `kernel_clock_state` must say the
        // same.
        for _ in 0..10 {
            let before = unsynced_per_clock_adjtime();
            let ours = kernel_clock_state();
            let after = unsynced_per_clock_adjtime();
            if before == after {
                let expected = if before {
                    ClockState::Unsynced
                } else {
                    ClockState::Synced
                };
                assert_eq!(ours, expected, "STA_UNSYNC/TIME_ERROR say {expected:?}");
                return;
            }
        }
        panic!("the kernel's clock state kept changing");
    }
}
