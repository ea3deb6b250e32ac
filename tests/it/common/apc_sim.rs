//! An APC Smart-UPS simulator on a real pseudo-terminal pair, with
//! unsolicited alert characters on demand, and the shutdown commands of
//! the power-off as a Smart-UPS answers them: the grace delay `p` (020, 180,
//! 300, 600 s) stepped with `-` (`OK` then `|`, the EEPROM-changed
//! notice), `S` (`OK` on battery, `NA` on mains), `@` + three digits
//! (`OK`); older models answer `*` instead of `OK`. What it received
//! besides the polled variables is recorded.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serialport::{SerialPort, TTYPort};

/// The grace delays `-` steps through, in order.
pub const GRACE: [u32; 4] = [20, 180, 300, 600];

pub struct ApcSim {
    /// The `Q` status byte.
    pub status: Arc<Mutex<u8>>,
    /// Commands received other than the polled variables and `Y`: `p`,
    /// `-`, `S`, `@000`, ...
    pub received: Arc<Mutex<Vec<String>>>,
    /// Index of the grace delay in [`GRACE`].
    pub grace: Arc<AtomicUsize>,
    /// Answer `S` and `@nnn` with `*` (older models).
    pub star: Arc<AtomicBool>,
    alert_port: Mutex<TTYPort>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    link: std::path::PathBuf,
}

impl ApcSim {
    pub fn start(link: &Path) -> ApcSim {
        let (mut master, slave) = TTYPort::pair().expect("pty pair");
        let name = slave.name().expect("slave name");
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&name, link).unwrap();
        master.set_timeout(Duration::from_millis(50)).unwrap();
        let alert_port = master.try_clone_native().unwrap();
        let status = Arc::new(Mutex::new(0x08u8));
        let received = Arc::new(Mutex::new(Vec::new()));
        let grace = Arc::new(AtomicUsize::new(0));
        let star = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (status.clone(), stop.clone());
        let (rx, gr, sr) = (received.clone(), grace.clone(), star.clone());
        let thread = std::thread::spawn(move || {
            let _slave = slave;
            let mut smart = false;
            let mut last = 0u8;
            let mut b = [0u8; 1];
            while !sp.load(Ordering::Relaxed) {
                match master.read(&mut b) {
                    Ok(1) => {
                        let ok = || {
                            if sr.load(Ordering::Relaxed) {
                                b"*".to_vec()
                            } else {
                                b"OK\r\n".to_vec()
                            }
                        };
                        if smart && !b"YQBfLOPjFnC".contains(&b[0]) && b[0] != b'@' {
                            rx.lock().unwrap().push((b[0] as char).to_string());
                        }
                        let prev = std::mem::replace(&mut last, b[0]);
                        let reply: Vec<u8> = match (b[0], smart) {
                            (b'Y', _) => {
                                smart = true;
                                b"SM\r\n".to_vec()
                            }
                            (_, false) => continue,
                            (b'p', _) => {
                                format!("{:03}\r\n", GRACE[gr.load(Ordering::Relaxed)]).into_bytes()
                            }
                            // `-` steps the value last read, if it can.
                            (b'-', _) if prev == b'p' => {
                                let i = (gr.load(Ordering::Relaxed) + 1) % GRACE.len();
                                gr.store(i, Ordering::Relaxed);
                                b"OK\r\n|".to_vec()
                            }
                            (b'-', _) => b"NO\r\n".to_vec(),
                            // Soft hibernate works only on battery.
                            (b'S', _) if *st.lock().unwrap() & 0x10 != 0 => ok(),
                            (b'S', _) => b"NA\r\n".to_vec(),
                            (b'@', _) => {
                                // Three digits follow.
                                let mut digits = String::new();
                                for _ in 0..40 {
                                    if digits.len() == 3 {
                                        break;
                                    }
                                    if let Ok(1) = master.read(&mut b) {
                                        digits.push(b[0] as char);
                                    }
                                }
                                rx.lock().unwrap().push(format!("@{digits}"));
                                if digits.len() == 3 && digits.bytes().all(|d| d.is_ascii_digit()) {
                                    ok()
                                } else {
                                    b"NA\r\n".to_vec()
                                }
                            }
                            (b'Q', _) => format!("{:02X}\r\n", *st.lock().unwrap()).into_bytes(),
                            (b'B', _) => b"27.87\r\n".to_vec(),
                            (b'f', _) => b"094.0\r\n".to_vec(),
                            (b'L', _) => b"229.6\r\n".to_vec(),
                            (b'O', _) => b"230.4\r\n".to_vec(),
                            (b'P', _) => b"031.2\r\n".to_vec(),
                            (b'j', _) => b"0042:\r\n".to_vec(),
                            (b'F', _) => b"50.00\r\n".to_vec(),
                            (b'n', _) => b"QS0123456789\r\n".to_vec(),
                            _ => b"NA\r\n".to_vec(),
                        };
                        let _ = master.write_all(&reply);
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        ApcSim {
            status,
            received,
            grace,
            star,
            alert_port: Mutex::new(alert_port),
            stop,
            thread: Some(thread),
            link: link.to_path_buf(),
        }
    }

    /// The grace delay now, in seconds.
    pub fn grace_delay(&self) -> u32 {
        GRACE[self.grace.load(Ordering::Relaxed)]
    }

    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// Sends an unsolicited alert character.
    pub fn alert(&self, c: u8) {
        let _ = self.alert_port.lock().unwrap().write_all(&[c]);
    }
}

impl Drop for ApcSim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.link);
    }
}
