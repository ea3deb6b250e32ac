//! The InfluxDB sink's peers: a real VictoriaMetrics (it accepts
//! `/api/v2/write`) on a loopback port of its own, and a scripted HTTP
//! server that answers each write as the test says (VictoriaMetrics never
//! answers 401/413/422/429/5xx) and records what it got.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{closed_port, http_exchange, signal, ClosedPort, WAIT};

/// A VictoriaMetrics on a loopback port of its own, data in a temp dir.
pub struct Vm {
    pub port: u16,
    /// Holds the port for this test alone while VictoriaMetrics is stopped
    /// or starting (see [`closed_port`]).
    reserved: ClosedPort,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Vm {
    pub fn start() -> Vm {
        let mut vm = Vm::on(closed_port());
        vm.start_again();
        vm
    }

    /// A VictoriaMetrics for `port`, not started yet: nothing listens there
    /// until [`Vm::start_again`].
    pub fn on(reserved: ClosedPort) -> Vm {
        Vm {
            port: reserved.port,
            reserved,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    /// Starts it on its port (reserved for this test, so nobody else can
    /// listen there) and waits until this process is alive and answers
    /// `/health`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "victoria-metrics is running");
        let p = self.reserved.port;
        let log = std::fs::File::create(self.dir.path().join("vm.log")).unwrap();
        let child = Command::new("/usr/bin/victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{p}"))
            .arg(format!(
                "-storageDataPath={}",
                self.dir.path().join("data").display()
            ))
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("victoria-metrics (apt install victoria-metrics; scripts/test does)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().unwrap());
            assert!(
                exited.is_none(),
                "victoria-metrics exited ({exited:?}) on port {p}: {}",
                std::fs::read_to_string(self.dir.path().join("vm.log")).unwrap_or_default()
            );
            if health_ok(p) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "victoria-metrics did not answer /health on {p}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A clean stop (SIGTERM): what it acknowledged is on its disk (a
    /// SIGKILL would lose its last second of writes, which is the
    /// database's durability, not the gateway's).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every series matching `selector`, after a flush: (labels, samples
    /// by timestamp).
    pub async fn export(&self, selector: &str) -> Vec<(BTreeMap<String, String>, Vec<(i64, f64)>)> {
        let (s, _) = self.get("/internal/force_flush").await;
        assert_eq!(s, 200);
        let q: String = selector
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let (s, body) = self.get(&format!("/api/v1/export?match[]={q}")).await;
        assert_eq!(s, 200, "{body}");
        let mut out = Vec::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            let labels = v["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect();
            let ts = v["timestamps"].as_array().unwrap();
            let vals = v["values"].as_array().unwrap();
            let pts = ts
                .iter()
                .zip(vals)
                .map(|(t, x)| (t.as_i64().unwrap(), x.as_f64().unwrap_or(f64::NAN)))
                .collect();
            out.push((labels, pts));
        }
        out
    }

    /// An HTTP/1.0 GET (no chunked answer), the answer within 20 s (an
    /// export on a loaded machine): status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let (code, text) = http_exchange(
            std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            &format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n"),
            Duration::from_secs(20),
            "victoria-metrics",
        )
        .await;
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_owned();
        (code, body)
    }

    /// The sample seqs of `device` in the database (`telemetry_seq`), with
    /// their timestamps.
    pub async fn seqs(&self, site: &str, device: &str) -> BTreeMap<u64, i64> {
        let mut out = BTreeMap::new();
        for (_, pts) in self
            .export(&format!(
                "telemetry_seq{{site=\"{site}\",device=\"{device}\"}}"
            ))
            .await
        {
            for (t, v) in pts {
                out.insert(v as u64, t);
            }
        }
        out
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether an HTTP server on `port` answers `GET /health` with 200 `OK`
/// (VictoriaMetrics' readiness), within 2 s.
fn health_ok(port: u16) -> bool {
    use std::io::Write as _;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.starts_with("HTTP/1.") && text.contains(" 200 ") && text.ends_with("OK")
}

/// One write the scripted server received: the lines, and when.
#[derive(Debug, Clone)]
pub struct Write {
    pub at: Instant,
    pub status: u16,
    pub lines: Vec<String>,
    pub auth: Option<String>,
}

pub type Answerer = Box<dyn FnMut(&[String]) -> (u16, Vec<(String, String)>, String) + Send>;

/// An HTTP/1.1 server on loopback that answers each `/api/v2/write` as the
/// test's function says and records what it got (gzip bodies unpacked).
pub struct Scripted {
    pub port: u16,
    writes: Arc<Mutex<Vec<Write>>>,
    answer: Arc<Mutex<Answerer>>,
}

impl Scripted {
    pub async fn start(answer: Answerer) -> Scripted {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let writes: Arc<Mutex<Vec<Write>>> = Arc::default();
        let answer = Arc::new(Mutex::new(answer));
        let (w, a) = (writes.clone(), answer.clone());
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let (w, a) = (w.clone(), a.clone());
                tokio::spawn(async move {
                    let _ = serve(s, w, a).await;
                });
            }
        });
        Scripted {
            port,
            writes,
            answer,
        }
    }

    pub fn set(&self, answer: Answerer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn writes(&self) -> Vec<Write> {
        self.writes.lock().unwrap().clone()
    }

    /// Lines answered 2xx.
    pub fn landed(&self) -> Vec<String> {
        self.writes()
            .into_iter()
            .filter(|w| w.status < 300)
            .flat_map(|w| w.lines)
            .collect()
    }

    /// The seqs of the ups1 samples answered 2xx, in the order they were
    /// written.
    pub fn ups1_seqs(&self) -> Vec<u64> {
        self.landed()
            .iter()
            .filter(|l| is_ups1_sample(l))
            .map(|l| seq_of(l))
            .collect()
    }
}

async fn serve(
    s: tokio::net::TcpStream,
    writes: Arc<Mutex<Vec<Write>>>,
    answer: Arc<Mutex<Answerer>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut len = 0usize;
        let mut gzip = false;
        let mut auth = None;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "content-encoding" => gzip = v.trim() == "gzip",
                "authorization" => auth = Some(v.trim().to_owned()),
                _ => {}
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        let text = if gzip {
            let mut t = String::new();
            flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut t)?;
            t
        } else {
            String::from_utf8_lossy(&body).into_owned()
        };
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let (status, headers, resp) = (answer.lock().unwrap())(&lines);
        writes.lock().unwrap().push(Write {
            at: Instant::now(),
            status,
            lines,
            auth,
        });
        let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", resp.len());
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&resp);
        r.get_mut().write_all(out.as_bytes()).await?;
    }
}

pub fn ok() -> (u16, Vec<(String, String)>, String) {
    (204, vec![], String::new())
}

/// `seq=N` of a line.
pub fn seq_of(line: &str) -> u64 {
    let i = line.find("seq=").unwrap() + 4;
    line[i..].split('i').next().unwrap().parse().unwrap()
}

pub fn is_ups1_sample(l: &str) -> bool {
    l.starts_with("telemetry,device=ups1,")
}
