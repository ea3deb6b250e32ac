//! A Megatec/Q1 UPS simulator on a real pseudo-terminal pair. The gateway
//! (or NUT's driver) opens the slave through a symlink, the way a real
//! adapter appears under /dev/serial/by-id/; "unplugging" closes the pair
//! and removes the link, "plugging" makes a new pair behind the same link.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serialport::{SerialPort, TTYPort};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Answer every command with `(NAK`.
    Nak,
    /// Echo every command back.
    Echo,
    /// Answer nothing.
    Silent,
    /// Answer Q1 with line noise (as at a wrong baud rate).
    Garbage,
    /// Answer Q1 with a cut-off frame.
    Truncated,
}

#[derive(Debug, Clone)]
pub struct UpsState {
    pub mode: Mode,
    pub input_v: f64,
    pub output_v: f64,
    pub load: u32,
    pub freq: f64,
    pub battery_v: f64,
    pub temp: f64,
    /// b7..b0, e.g. "00001001".
    pub bits: String,
    /// Every command received, in order (without the CR).
    pub received: Vec<String>,
    /// Replies to the next Q1 polls, one each, before `mode` applies again:
    /// a scripted sequence of good and failed polls.
    pub script: std::collections::VecDeque<Scripted>,
    /// Echo the shutdown commands (`S<n>R<m>`, `C`) back, a Megatec UPS's
    /// way of refusing a command, instead of saying nothing.
    pub refuse_shutdown: bool,
}

/// One scripted Q1 poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scripted {
    /// Answer with these status bits (the rest of the state as it is).
    Bits(String),
    /// Answer nothing (a failed poll).
    Silent,
}

impl Default for UpsState {
    fn default() -> Self {
        UpsState {
            mode: Mode::Normal,
            input_v: 230.4,
            output_v: 229.8,
            load: 23,
            freq: 50.0,
            battery_v: 13.6,
            temp: 30.5,
            bits: "00001001".into(),
            received: Vec::new(),
            script: Default::default(),
            refuse_shutdown: false,
        }
    }
}

impl UpsState {
    pub fn q1(&self) -> String {
        format!(
            "({:05.1} {:05.1} {:05.1} {:03} {:04.1} {:04.1} {:04.1} {}\r",
            self.input_v,
            140.0,
            self.output_v,
            self.load,
            self.freq,
            self.battery_v,
            self.temp,
            self.bits
        )
    }

    fn reply(&mut self, cmd: &str) -> Option<Vec<u8>> {
        self.received.push(cmd.to_owned());
        if cmd == "Q1" {
            match self.script.pop_front() {
                Some(Scripted::Silent) => return None,
                Some(Scripted::Bits(b)) => {
                    let mut s = self.clone();
                    s.bits = b;
                    return Some(s.q1().into_bytes());
                }
                None => {}
            }
        }
        // Shutdown commands (`S<n>R<m>`, `C`): a real UPS says nothing,
        // unless it refuses them.
        if cmd.starts_with('S') || cmd == "C" {
            return self
                .refuse_shutdown
                .then(|| format!("{cmd}\r").into_bytes());
        }
        match self.mode {
            Mode::Silent => return None,
            Mode::Nak => return Some(b"(NAK\r".to_vec()),
            Mode::Echo => return Some(format!("{cmd}\r").into_bytes()),
            _ => {}
        }
        match cmd {
            "Q1" => Some(match self.mode {
                Mode::Garbage => vec![0xf8, 0x80, 0x00, 0xfe, 0x78, 0x80, 0x80, 0xe0, 0x1e, 0x00],
                Mode::Truncated => b"(230.4 140.0 229\r".to_vec(),
                _ => self.q1().into_bytes(),
            }),
            "F" => Some(b"#230.0 004 012.0 50.0\r".to_vec()),
            "I" => Some(b"#WARDGATE-SIM    MEGA-1000  V1.0      \r".to_vec()),
            _ => Some(format!("{cmd}\r").into_bytes()),
        }
    }
}

pub struct MegatecSim {
    pub state: Arc<Mutex<UpsState>>,
    pub link: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Group to give the slave (NUT's driver runs as user nut).
    group: Option<String>,
}

impl MegatecSim {
    pub fn start(link: &Path) -> MegatecSim {
        let mut s = MegatecSim {
            state: Arc::default(),
            link: link.to_path_buf(),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            group: None,
        };
        s.plug();
        s
    }

    /// As `start`, with the slave pty made readable by a group (mode 660).
    pub fn start_for_group(link: &Path, group: &str) -> MegatecSim {
        let mut s = MegatecSim {
            state: Arc::default(),
            link: link.to_path_buf(),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            group: Some(group.to_owned()),
        };
        s.plug();
        s
    }

    pub fn set(&self, f: impl FnOnce(&mut UpsState)) {
        f(&mut self.state.lock().unwrap());
    }

    /// Every command received so far.
    pub fn received(&self) -> Vec<String> {
        self.state.lock().unwrap().received.clone()
    }

    /// Every command received so far other than the reading's own (Q1, F
    /// and I): what a driver asked the UPS to do.
    pub fn commands(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|c| !["Q1", "F", "I"].contains(&c.as_str()))
            .collect()
    }

    /// Q1 polls answered so far.
    pub fn polls(&self) -> usize {
        self.received().iter().filter(|c| *c == "Q1").count()
    }

    /// A new pty pair behind the link, served by a thread.
    pub fn plug(&mut self) {
        let (mut master, slave) = TTYPort::pair().expect("pty pair");
        let name = slave.name().expect("slave name");
        if let Some(g) = &self.group {
            let st = std::process::Command::new("chgrp")
                .arg(g)
                .arg(&name)
                .status()
                .unwrap();
            assert!(st.success());
            let st = std::process::Command::new("chmod")
                .arg("660")
                .arg(&name)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let _ = std::fs::remove_file(&self.link);
        std::os::unix::fs::symlink(&name, &self.link).expect("symlink to the pty");
        master.set_timeout(Duration::from_millis(50)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = stop.clone();
        let state = self.state.clone();
        self.thread = Some(std::thread::spawn(move || {
            // Keep the slave open so the pty lives while nobody else has it.
            let _slave = slave;
            let mut line = Vec::new();
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                match master.read(&mut buf) {
                    Ok(n) => {
                        for &b in &buf[..n] {
                            if b == b'\r' {
                                let cmd = String::from_utf8_lossy(&line).into_owned();
                                line.clear();
                                let reply = state.lock().unwrap().reply(&cmd);
                                if let Some(r) = reply {
                                    // One write per reply: NUT's drivers do one read.
                                    let _ = master.write_all(&r);
                                }
                            } else if line.len() < 64 {
                                line.push(b);
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }));
    }

    /// Closes the pty pair and removes the link, like pulling the adapter.
    pub fn unplug(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.link);
    }
}

impl Drop for MegatecSim {
    fn drop(&mut self) {
        self.unplug();
    }
}
