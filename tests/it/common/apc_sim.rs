//! An APC Smart-UPS simulator on a real pseudo-terminal pair, with
//! unsolicited alert characters on demand.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serialport::{SerialPort, TTYPort};

pub struct ApcSim {
    /// The `Q` status byte.
    pub status: Arc<Mutex<u8>>,
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
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (status.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let _slave = slave;
            let mut smart = false;
            let mut b = [0u8; 1];
            while !sp.load(Ordering::Relaxed) {
                match master.read(&mut b) {
                    Ok(1) => {
                        let reply: Vec<u8> = match (b[0], smart) {
                            (b'Y', _) => {
                                smart = true;
                                b"SM\r\n".to_vec()
                            }
                            (_, false) => continue,
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
            alert_port: Mutex::new(alert_port),
            stop,
            thread: Some(thread),
            link: link.to_path_buf(),
        }
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
