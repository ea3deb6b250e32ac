//! A Modbus bus: one RS-485 line (or one TCP connection to a device or an
//! RS-485 gateway) shared by every configured slave on it. Requests are
//! sent one at a time with a quiet gap between them; each has its own
//! timeout, so an absent slave costs its timeout and nothing more.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::slave::{Slave, SlaveContext};
use tokio_modbus::{Request, Response};

use super::config::{ModbusConfig, ModbusTransport, ParityName};
use super::map::{Block, Function};
use crate::source::serial::{self, Line};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BusKey {
    Serial(PathBuf),
    Tcp(String, u16),
}

impl std::fmt::Display for BusKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusKey::Serial(p) => write!(f, "{}", p.display()),
            BusKey::Tcp(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ModbusError {
    /// The serial port or TCP connection could not be opened: the device
    /// is faulted with this reason and the bus is reopened next poll.
    #[error("{0}")]
    Open(String),
    /// Nothing came back: counted as `timeout`; after a few polls the
    /// device is faulted (the slave is absent, unpowered or on another id).
    #[error("no reply from unit {unit} within {} ms", .timeout.as_millis())]
    Timeout { unit: u8, timeout: Duration },
    /// Bytes came back but no valid frame (CRC error, noise, wrong speed):
    /// counted as `crc`.
    #[error("garbled reply from unit {unit} (CRC error or line noise; check A/B wiring, termination and baud rate)")]
    Garbled { unit: u8 },
    /// The slave refused the request: counted as `exception` and reported;
    /// usually a wrong address or function in the register map.
    #[error("unit {unit} answered exception {code:#04x} ({text}) to function {function:#04x} at address {address}")]
    Exception {
        unit: u8,
        code: u8,
        text: String,
        function: u8,
        address: u16,
    },
    /// The line or connection failed mid-request: counted as `io`; the bus
    /// is reopened.
    #[error("{0}")]
    Link(String),
    /// A well-framed reply with another number of registers or coils than
    /// asked for (a broken or hostile slave): counted as `size`, nothing of
    /// it is used; after a few polls the device is faulted.
    #[error("unit {unit} answered {got} value(s) to a request for {asked}")]
    Size { unit: u8, asked: u16, got: usize },
}

impl ModbusError {
    /// The error-count key in the status snapshot.
    pub fn kind(&self) -> &'static str {
        match self {
            ModbusError::Open(_) => "open",
            ModbusError::Timeout { .. } => "timeout",
            ModbusError::Garbled { .. } => "crc",
            ModbusError::Exception { .. } => "exception",
            ModbusError::Link(_) => "io",
            ModbusError::Size { .. } => "size",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// A transport that counts the bytes read, so that a timeout can be told
/// apart from a garbled reply (tokio-modbus skips bytes with a bad CRC and
/// keeps waiting, so both end in a timeout).
#[derive(Debug)]
struct Counted<T> {
    inner: T,
    rx: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.rx.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Conn {
    ctx: Option<(Context, Arc<AtomicU64>)>,
    last_done: Option<Instant>,
}

pub struct Bus {
    key: BusKey,
    baud: u32,
    line: Line,
    conn: tokio::sync::Mutex<Conn>,
}

impl Bus {
    pub fn for_device(c: &ModbusConfig) -> Arc<Bus> {
        let key = match (&c.transport, &c.serial, &c.host) {
            (ModbusTransport::Tcp, _, Some(h)) => BusKey::Tcp(h.clone(), c.port.get()),
            (_, Some(p), _) => BusKey::Serial(p.to_path_buf()),
            // Validation rules this out; an empty path fails to open with a
            // clear message rather than panicking.
            _ => BusKey::Serial(PathBuf::new()),
        };
        Arc::new(Bus {
            key,
            baud: c.baud(),
            line: Line {
                data_bits: tokio_serial::DataBits::Eight,
                parity: match c.parity() {
                    ParityName::None => tokio_serial::Parity::None,
                    ParityName::Even => tokio_serial::Parity::Even,
                    ParityName::Odd => tokio_serial::Parity::Odd,
                },
                stop_bits: if c.stop_bits() == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                },
            },
            conn: tokio::sync::Mutex::new(Conn {
                ctx: None,
                last_done: None,
            }),
        })
    }

    /// A bus over a given transport (tests: one end of a duplex pipe).
    pub fn over<T>(key: BusKey, transport: T) -> Arc<Bus>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug + 'static,
    {
        let rx = Arc::new(AtomicU64::new(0));
        let ctx = tokio_modbus::client::rtu::attach(Counted {
            inner: transport,
            rx: rx.clone(),
        });
        Arc::new(Bus {
            key,
            baud: 9600,
            line: Line::default(),
            conn: tokio::sync::Mutex::new(Conn {
                ctx: Some((ctx, rx)),
                last_done: None,
            }),
        })
    }

    pub fn key(&self) -> &BusKey {
        &self.key
    }

    async fn open(&self) -> Result<(Context, Arc<AtomicU64>), ModbusError> {
        let rx = Arc::new(AtomicU64::new(0));
        let ctx = match &self.key {
            BusKey::Serial(path) => {
                let port = serial::open(path, self.baud, self.line)
                    .map_err(|e| ModbusError::Open(e.to_string()))?;
                tokio_modbus::client::rtu::attach(Counted {
                    inner: port,
                    rx: rx.clone(),
                })
            }
            BusKey::Tcp(host, port) => {
                let stream = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::net::TcpStream::connect((host.as_str(), *port)),
                )
                .await
                .map_err(|_| ModbusError::Open(format!("{host}:{port}: no answer to connect")))?
                .map_err(|e| ModbusError::Open(format!("{host}:{port}: {e}")))?;
                let _ = stream.set_nodelay(true);
                tokio_modbus::client::tcp::attach(Counted {
                    inner: stream,
                    rx: rx.clone(),
                })
            }
        };
        Ok((ctx, rx))
    }

    /// Sends one read request to `unit` and waits for its reply. Waits its
    /// turn behind other slaves' requests on the same bus.
    pub async fn read(
        &self,
        unit: u8,
        block: &Block,
        timeout: Duration,
        gap: Duration,
    ) -> Result<Reply, ModbusError> {
        let mut conn = self.conn.lock().await;
        if let Some(t) = conn.last_done {
            tokio::time::sleep_until(t + gap).await;
        }
        if conn.ctx.is_none() {
            conn.ctx = Some(self.open().await?);
        }
        let Some((ctx, rx)) = conn.ctx.as_mut() else {
            return Err(ModbusError::Open("not connected".into()));
        };
        ctx.set_slave(Slave(unit));
        let before = rx.load(Ordering::Relaxed);
        let (start, count) = (block.start, block.count);
        // `call`, not the `Reader` methods: those only debug-assert the
        // reply's size (a panic in a debug build, unchecked in release).
        let call = async {
            ctx.call(match block.function {
                Function::Coil => Request::ReadCoils(start, count),
                Function::Discrete => Request::ReadDiscreteInputs(start, count),
                Function::Holding => Request::ReadHoldingRegisters(start, count),
                Function::Input => Request::ReadInputRegisters(start, count),
            })
            .await
        };
        let res = tokio::time::timeout(timeout, call).await;
        let got_bytes = rx.load(Ordering::Relaxed) != before;
        conn.last_done = Some(Instant::now());
        let is_tcp = matches!(self.key, BusKey::Tcp(..));
        match res {
            Err(_) => {
                // A late TCP reply would carry a stale transaction id: start
                // afresh. On a serial line the read buffer is cleared before
                // each request, so the port stays open.
                if is_tcp {
                    conn.ctx = None;
                }
                if got_bytes {
                    Err(ModbusError::Garbled { unit })
                } else {
                    Err(ModbusError::Timeout { unit, timeout })
                }
            }
            Ok(Err(e)) => {
                conn.ctx = None;
                Err(ModbusError::Link(format!("{}: {e}", self.key)))
            }
            Ok(Ok(Err(code))) => Err(ModbusError::Exception {
                unit,
                code: u8::from(code),
                text: code.to_string(),
                function: block.function.code(),
                address: start,
            }),
            Ok(Ok(Ok(reply))) => checked(unit, count, reply),
        }
    }
}

/// The buses of a running gateway: devices naming the same serial port or
/// TCP endpoint share one.
#[derive(Default, Clone)]
pub struct Buses(Arc<std::sync::Mutex<std::collections::HashMap<BusKey, Arc<Bus>>>>);

impl Buses {
    pub fn get(&self, c: &ModbusConfig) -> Arc<Bus> {
        let bus = Bus::for_device(c);
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(bus.key.clone()).or_insert(bus).clone()
    }
}

/// The reply's values if there are exactly as many as asked for (coils
/// come in whole bytes: the padding bits are dropped).
fn checked(unit: u8, asked: u16, r: Response) -> Result<Reply, ModbusError> {
    let n = usize::from(asked);
    let size = |got| ModbusError::Size { unit, asked, got };
    match r {
        Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => {
            if w.len() == n {
                Ok(Reply::Words(w))
            } else {
                Err(size(w.len()))
            }
        }
        Response::ReadCoils(mut b) | Response::ReadDiscreteInputs(mut b) => {
            if b.len() == n.div_ceil(8) * 8 {
                b.truncate(n);
                Ok(Reply::Bits(b))
            } else {
                Err(size(b.len()))
            }
        }
        // tokio-modbus checks the function code; another reply is garbled.
        _ => Err(ModbusError::Garbled { unit }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn crc(frame: &[u8]) -> Vec<u8> {
        let mut c: u16 = 0xFFFF;
        for b in frame {
            c ^= u16::from(*b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xA001
                } else {
                    c >> 1
                };
            }
        }
        let mut v = frame.to_vec();
        v.extend_from_slice(&c.to_le_bytes());
        v
    }

    fn block(f: Function, start: u16, count: u16) -> Block {
        Block {
            function: f,
            start,
            count,
            fields: vec![],
        }
    }

    /// A fake slave on the other end of a pipe: answers each request with
    /// the next canned reply (or nothing for an empty one), and records what
    /// it was sent.
    fn slave(
        mut end: tokio::io::DuplexStream,
        replies: Vec<Vec<u8>>,
    ) -> tokio::task::JoinHandle<Vec<Vec<u8>>> {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for r in replies {
                let mut req = [0u8; 8];
                if end.read_exact(&mut req).await.is_err() {
                    break;
                }
                seen.push(req.to_vec());
                if !r.is_empty() {
                    let _ = end.write_all(&r).await;
                }
            }
            seen
        })
    }

    #[tokio::test]
    async fn real_frames_timeouts_crc_and_exceptions() {
        let (a, b) = tokio::io::duplex(256);
        let replies = vec![
            // XY-MD02 23.5 degC 45.1 %
            hex("01 04 04 00 EB 01 C3 CA 71"),
            // absent slave 5: silence
            vec![],
            // SDM120 231.2 V, answered after the absent one
            hex("02 04 04 43 67 33 33 38 3A"),
            // a reply with a broken CRC
            hex("01 04 04 00 EB 01 C3 00 00"),
            // exception 02 illegal data address
            crc(&[0x01, 0x84, 0x02]),
            // coils
            crc(&[0x03, 0x01, 0x01, 0x05]),
        ];
        let fake = slave(b, replies);
        let bus = Bus::over(BusKey::Serial("/dev/test".into()), a);
        let t = Duration::from_millis(200);
        let gap = Duration::from_millis(1);
        let r = bus.read(1, &block(Function::Input, 1, 2), t, gap).await;
        assert_eq!(r, Ok(Reply::Words(vec![0x00EB, 0x01C3])));
        let r = bus.read(5, &block(Function::Input, 1, 2), t, gap).await;
        assert_eq!(
            r,
            Err(ModbusError::Timeout {
                unit: 5,
                timeout: t
            })
        );
        let r = bus.read(2, &block(Function::Input, 0, 2), t, gap).await;
        assert_eq!(r, Ok(Reply::Words(vec![0x4367, 0x3333])));
        let r = bus.read(1, &block(Function::Input, 1, 2), t, gap).await;
        assert_eq!(r, Err(ModbusError::Garbled { unit: 1 }));
        assert_eq!(r.unwrap_err().kind(), "crc");
        let r = bus.read(1, &block(Function::Input, 0x100, 1), t, gap).await;
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                ModbusError::Exception {
                    code: 2,
                    function: 4,
                    address: 256,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("0x02"), "{e}");
        let r = bus.read(3, &block(Function::Coil, 0, 4), t, gap).await;
        assert_eq!(r, Ok(Reply::Bits(vec![true, false, true, false])));
        let seen = fake.await.unwrap();
        assert_eq!(seen[0], hex("01 04 00 01 00 02 20 0B"));
        assert_eq!(seen[2], hex("02 04 00 00 00 02 71 F8"));
    }

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn missing_port_is_an_open_error() {
        let c: ModbusConfig = toml_device(
            "id = \"m\"\ntype = \"modbus\"\nserial = \"/dev/serial/by-id/none\"\nprofile = \"xy-md02\"\n",
        );
        let bus = Bus::for_device(&c);
        let e = bus
            .read(
                1,
                &block(Function::Input, 1, 2),
                Duration::from_millis(50),
                Duration::ZERO,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ModbusError::Open(_)), "{e:?}");
        assert!(e.to_string().contains("plugged in"), "{e}");
    }

    #[test]
    fn devices_on_one_port_share_a_bus() {
        let buses = Buses::default();
        let a: ModbusConfig = toml_device(
            "id = \"a\"\ntype = \"modbus\"\nserial = \"/dev/x\"\nprofile = \"xy-md02\"\n",
        );
        let b: ModbusConfig = toml_device(
            "id = \"b\"\ntype = \"modbus\"\nserial = \"/dev/x\"\nunit = 2\nprofile = \"xy-md02\"\n",
        );
        let c: ModbusConfig = toml_device(
            "id = \"c\"\ntype = \"modbus\"\nserial = \"/dev/y\"\nprofile = \"xy-md02\"\n",
        );
        assert!(Arc::ptr_eq(&buses.get(&a), &buses.get(&b)));
        assert!(!Arc::ptr_eq(&buses.get(&a), &buses.get(&c)));
    }

    #[test]
    fn replies_of_another_size_are_refused() {
        let words = |n| Response::ReadHoldingRegisters(vec![7; n]);
        assert_eq!(checked(1, 3, words(3)), Ok(Reply::Words(vec![7; 3])));
        assert_eq!(
            checked(1, 3, words(2)),
            Err(ModbusError::Size {
                unit: 1,
                asked: 3,
                got: 2
            })
        );
        assert_eq!(checked(1, 3, words(125)).unwrap_err().kind(), "size");
        // Ten coils come in two bytes; the padding is dropped.
        let bits = |n| Response::ReadCoils(vec![true; n]);
        assert_eq!(checked(1, 10, bits(16)), Ok(Reply::Bits(vec![true; 10])));
        assert!(checked(1, 10, bits(8)).is_err());
        assert!(checked(1, 10, bits(2000)).is_err());
        assert!(checked(1, 1, Response::ReadInputRegisters(vec![])).is_err());
    }

    fn toml_device(s: &str) -> ModbusConfig {
        match toml_dev(s) {
            crate::config::DeviceConfig::Modbus(c) => c,
            _ => panic!("not modbus"),
        }
    }

    fn toml_dev(s: &str) -> crate::config::DeviceConfig {
        let text = format!("site = \"t\"\n[mqtt]\nhost = \"localhost\"\n[[device]]\n{s}");
        let cfg = crate::config::Config::from_toml(&text).unwrap();
        cfg.devices[0].clone()
    }
}
