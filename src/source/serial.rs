//! Opening serial ports (RS-232, RS-485, USB-serial adapters).
//!
//! Ports are named by stable paths (`/dev/serial/by-id/...` or a udev
//! symlink such as `/dev/wardgate-ups`), so an adapter that is unplugged and
//! plugged back comes back under the same name and is simply reopened.

use std::path::Path;

use tokio_serial::{DataBits, FlowControl, Parity, SerialPortBuilderExt, SerialStream, StopBits};

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The port does not exist (adapter unplugged, wrong path): fault, retry.
    #[error("{path}: no such serial port (is the adapter plugged in? see /dev/serial/by-id/)")]
    Missing { path: String },
    /// The port exists but we may not open it: fault with a hint, retry.
    #[error("{path}: permission denied (is the service user in the dialout group?)")]
    Permission { path: String },
    /// The device cgroup of the unit refuses it (EPERM: not in
    /// wardgate.service's `DeviceAllow=` list): fault with the fix, retry.
    #[error("{path}: the service may not open this device (not in wardgate.service's DeviceAllow= list: add it with a drop-in, see docs/packaging.md)")]
    NotAllowed { path: String },
    /// Any other failure to open or configure the port: fault, retry.
    #[error("{path}: {message}")]
    Other { path: String, message: String },
}

/// Line settings besides the baud rate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line {
    pub data_bits: DataBits,
    pub parity: Parity,
    pub stop_bits: StopBits,
}

impl Default for Line {
    /// 8N1, what UPS serial ports use.
    fn default() -> Self {
        Line {
            data_bits: DataBits::Eight,
            parity: Parity::None,
            stop_bits: StopBits::One,
        }
    }
}

/// What one more byte did to a reply being framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// No terminator yet: keep reading.
    More,
    /// The reply ends with its terminator and is complete.
    Done,
    /// The reply grew past the protocol's limit without a terminator (line
    /// noise or a wrong baud rate): the reader gives up on it.
    TooLong,
}

/// Line framing of the serial UPS protocols, sans-IO: the readers add each
/// byte as the port gives it. A reply is done when it ends with
/// `terminator` (CR for Megatec, CR LF for APC Smart), too long when it
/// holds more than `max` bytes without one (so a complete reply holds at
/// most `max` bytes before its last terminator byte). Pure, so it is fuzzed
/// (`fuzz/fuzz_targets/serial_frame.rs`).
pub fn push_byte(reply: &mut Vec<u8>, b: u8, terminator: &[u8], max: usize) -> Frame {
    reply.push(b);
    if reply.ends_with(terminator) {
        Frame::Done
    } else if reply.len() > max {
        Frame::TooLong
    } else {
        Frame::More
    }
}

pub(crate) fn open(path: &Path, baud: u32, line: Line) -> Result<SerialStream, SerialError> {
    let p = path.display().to_string();
    if !path.exists() {
        return Err(SerialError::Missing { path: p });
    }
    tokio_serial::new(p.clone(), baud)
        .data_bits(line.data_bits)
        .parity(line.parity)
        .stop_bits(line.stop_bits)
        .flow_control(FlowControl::None)
        .open_native_async()
        .map_err(|e| classify(p, e.kind, e.to_string()))
}

/// What a failed open means. serialport reports a refusal by the device
/// cgroup (EPERM, "Operation not permitted") without an io kind of its
/// own, so it is told apart by its text from a missing group (EACCES).
fn classify(path: String, kind: tokio_serial::ErrorKind, msg: String) -> SerialError {
    match kind {
        tokio_serial::ErrorKind::NoDevice
        | tokio_serial::ErrorKind::Io(std::io::ErrorKind::NotFound) => {
            SerialError::Missing { path }
        }
        _ if msg.contains("Operation not permitted") => SerialError::NotAllowed { path },
        tokio_serial::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => {
            SerialError::Permission { path }
        }
        _ => SerialError::Other { path, message: msg },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        let mut r = Vec::new();
        for b in b"(NAK" {
            assert_eq!(push_byte(&mut r, *b, b"\r", 64), Frame::More);
        }
        assert_eq!(push_byte(&mut r, b'\r', b"\r", 64), Frame::Done);
        assert_eq!(r, b"(NAK\r");
        let mut r = Vec::new();
        assert_eq!(push_byte(&mut r, b'\r', b"\r\n", 4), Frame::More);
        assert_eq!(push_byte(&mut r, b'\n', b"\r\n", 4), Frame::Done);
        let mut r = b"xxxx".to_vec();
        assert_eq!(push_byte(&mut r, b'\r', b"\r", 4), Frame::Done);
        let mut r = b"xxxx".to_vec();
        assert_eq!(push_byte(&mut r, b'x', b"\r", 4), Frame::TooLong);
    }

    /// Each way an open fails names its own fix (the EPERM text is what the
    /// arm64 VM test saw for a device outside DeviceAllow=).
    #[test]
    fn open_failures_are_told_apart() {
        use tokio_serial::ErrorKind as K;
        let p = || "/dev/ttyUSB0".to_owned();
        let cases: &[(K, &str, &str)] = &[
            (K::NoDevice, "No such device", "no such serial port"),
            (
                K::Io(std::io::ErrorKind::NotFound),
                "No such file",
                "no such serial port",
            ),
            (
                K::Io(std::io::ErrorKind::PermissionDenied),
                "Permission denied",
                "dialout",
            ),
            (
                K::Io(std::io::ErrorKind::Other),
                "Operation not permitted",
                "DeviceAllow=",
            ),
            (
                K::Io(std::io::ErrorKind::PermissionDenied),
                "Operation not permitted",
                "DeviceAllow=",
            ),
            (K::Unknown, "Input/output error", "Input/output error"),
        ];
        for (kind, msg, want) in cases {
            let e = classify(p(), *kind, (*msg).to_owned());
            assert!(e.to_string().contains(want), "{msg}: {e}");
        }
    }

    #[tokio::test]
    async fn missing_port_says_so() {
        let e = open(
            Path::new("/dev/serial/by-id/nothing-here"),
            2400,
            Line::default(),
        )
        .unwrap_err();
        assert!(matches!(e, SerialError::Missing { .. }));
        assert!(e.to_string().contains("plugged in"), "{e}");
    }
}
