//! A small HTTP/1.1 client for InfluxDB's write API, on hyper 1 and rustls
//! (both already in the build for the page and MQTT), and the pure
//! classification of its answers.
//!
//! Why not the `influxdb2` crate: measured on 0.5.2, its `write_*` methods
//! turn every answer but 204 into `RequestError::Http { status, text }` and
//! drop the response headers, so `Retry-After` cannot be honoured; it also
//! brings a second HTTP stack (reqwest 0.11, hyper 0.14, rustls 0.21) plus
//! chrono and csv into a Pi binary. See docs/influxdb.md.
//!
//! One connection is kept open between requests (keep-alive) and opened
//! again after any error. Every request, connection included, is bounded by
//! `influxdb.timeout`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::config::Endpoint;

/// The most of an answer's body kept (error descriptions are short).
const MAX_ANSWER: usize = 64 << 10;

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    /// `Retry-After` in seconds, when given.
    pub retry_after: Option<Duration>,
    /// The body, cut at 64 KiB, lossily as UTF-8.
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// No connection (refused, unreachable, DNS, TLS): retried with back-off.
    #[error("cannot reach {0}")]
    Connect(String),
    /// No whole answer within `influxdb.timeout`: retried with back-off.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke during the request: retried with back-off.
    #[error("{0}")]
    Io(String),
    /// TLS material or the token file could not be read: retried with
    /// back-off (the technician may be copying the files in).
    #[error("{0}")]
    Setup(String),
}

pub(crate) struct Client {
    ep: Endpoint,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
    token_file: Option<std::path::PathBuf>,
    token: Option<String>,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    /// Loads the CA (for https) now; the token is read at each connection.
    pub(crate) fn new(
        ep: Endpoint,
        ca_file: Option<&Path>,
        token_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Client, HttpError> {
        let tls = if ep.tls {
            let mut cfg = crate::tls::tls_config(ca_file, None, None).map_err(|e| {
                HttpError::Setup(format!("influxdb TLS: {}", e.hint("influxdb.ca_file")))
            })?;
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
        } else {
            None
        };
        Ok(Client {
            ep,
            tls,
            timeout,
            token_file: token_file.map(Path::to_path_buf),
            token: None,
            conn: None,
        })
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// One request; `path` starts with `/` and includes the query.
    pub(crate) async fn request(
        &mut self,
        method: hyper::Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Answer, HttpError> {
        let t = self.timeout;
        match tokio::time::timeout(t, self.request_inner(method, path, headers, body)).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(HttpError::Timeout(t))
            }
        }
    }

    async fn request_inner(
        &mut self,
        method: hyper::Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Answer, HttpError> {
        let reuse = match &mut self.conn {
            Some(c) if !c.is_closed() => c.ready().await.is_ok(),
            _ => false,
        };
        if !reuse {
            self.conn = Some(self.connect().await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(HttpError::Io("no connection".into()));
        };
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.ep.base))
            .header("host", self.ep.authority())
            .header(
                "user-agent",
                concat!("wardgate/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Token {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| HttpError::Io(format!("building the request: {e}")))?;
        let resp = conn
            .send_request(req)
            .await
            .map_err(|e| HttpError::Io(format!("{}: {e}", self.ep.authority())))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = match Limited::new(resp.into_body(), MAX_ANSWER).collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(e) => {
                // A body too long or cut: the status still counts; the
                // connection is not reused.
                self.conn = None;
                format!("(answer unreadable: {e})")
            }
        };
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    async fn connect(&mut self) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        if let Some(f) = &self.token_file {
            let t = crate::host::file::read_secret_line(f)
                .map_err(|e| HttpError::Setup(format!("reading influxdb.token_file {e}")))?;
            self.token = Some(t.trim().to_owned());
        }
        let addr = (self.ep.host.as_str(), self.ep.port);
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| HttpError::Connect(format!("{}: {e}", self.ep.authority())))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.ep.host.clone())
                    .map_err(|e| HttpError::Setup(format!("{}: {e}", self.ep.host)))?;
                let s = tls.connect(name, tcp).await.map_err(|e| {
                    HttpError::Connect(format!("TLS with {}: {e}", self.ep.authority()))
                })?;
                handshake(s).await
            }
        }
    }
}

async fn handshake<S>(s: S) -> Result<SendRequest<Full<Bytes>>, HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| HttpError::Connect(e.to_string()))?;
    // The connection task ends when `send` is dropped or the peer closes.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "InfluxDB connection ended");
        }
    });
    Ok(send)
}

/// `Retry-After: <seconds>` (an HTTP date is not honoured: the back-off
/// applies instead).
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `?org=…&bucket=…&precision=ms` with both names percent-encoded.
pub(crate) fn write_path(base: &str, org: &str, bucket: &str) -> String {
    format!(
        "{base}/api/v2/write?org={}&bucket={}&precision=ms",
        pct(org),
        pct(bucket)
    )
}

fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What an answer means for the points it was about (Telegraf's
/// `outputs.influxdb_v2` classes; see docs/influxdb.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Class {
    /// 2xx: written; acknowledge.
    Written,
    /// 413: the request was too large; halve the batch and send again.
    TooLarge,
    /// 400/422 (not about retention): some points are bad; bisect to find
    /// them, set them aside, write the rest.
    BadPoints,
    /// The server dropped points as outside the bucket's retention
    /// (`dropped`, when it says how many): drop, count, never resend.
    Retention { dropped: Option<u64> },
    /// 401/403, and any other 4xx (404 "bucket not found" is a setup
    /// error, not bad data): keep everything, retry slowly.
    Refused,
    /// 429, 5xx, and anything else: retry with jittered back-off, after
    /// `Retry-After` when given.
    Retry { after: Option<Duration> },
}

pub(crate) fn classify(a: &Answer) -> Class {
    match a.status {
        200..=299 => Class::Written,
        413 => Class::TooLarge,
        400 | 422 => {
            let lower = a.body.to_ascii_lowercase();
            if lower.contains("retention") {
                Class::Retention {
                    dropped: dropped_count(&lower),
                }
            } else {
                Class::BadPoints
            }
        }
        401 | 403 => Class::Refused,
        429 | 500..=599 => Class::Retry {
            after: a.retry_after,
        },
        400..=499 => Class::Refused,
        _ => Class::Retry {
            after: a.retry_after,
        },
    }
}

/// `dropped=N` in an InfluxDB partial-write message.
fn dropped_count(body: &str) -> Option<u64> {
    let i = body.find("dropped=")?;
    let digits: String = body[i + 8..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The server's error message for logs and events: InfluxDB's JSON
/// `{"code":…,"message":…}` when it is one, else the body's first 200
/// characters.
pub(crate) fn describe(a: &Answer) -> String {
    let msg = serde_json::from_str::<serde_json::Value>(&a.body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| a.body.trim().to_owned());
    let mut m: String = msg.chars().take(200).collect();
    if m.is_empty() {
        m = "no description".into();
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(status: u16, body: &str, after: Option<u64>) -> Answer {
        Answer {
            status,
            retry_after: after.map(Duration::from_secs),
            body: body.into(),
        }
    }

    #[test]
    fn classes_like_telegraf() {
        let table = [
            (a(204, "", None), Class::Written),
            (a(200, "", None), Class::Written),
            (a(413, "", None), Class::TooLarge),
            (
                a(
                    400,
                    r#"{"code":"invalid","message":"unable to parse 'x'"}"#,
                    None,
                ),
                Class::BadPoints,
            ),
            (a(422, "field type conflict", None), Class::BadPoints),
            (
                a(
                    422,
                    r#"{"code":"unprocessable entity","message":"failure writing points to database: partial write: points beyond retention policy dropped=3"}"#,
                    None,
                ),
                Class::Retention { dropped: Some(3) },
            ),
            (
                a(400, "outside retention period", None),
                Class::Retention { dropped: None },
            ),
            (a(401, "unauthorized access", None), Class::Refused),
            (a(403, "", None), Class::Refused),
            (a(404, "bucket \"x\" not found", None), Class::Refused),
            (
                a(429, "", Some(7)),
                Class::Retry {
                    after: Some(Duration::from_secs(7)),
                },
            ),
            (
                a(503, "", Some(2)),
                Class::Retry {
                    after: Some(Duration::from_secs(2)),
                },
            ),
            (a(500, "", None), Class::Retry { after: None }),
            (a(302, "", None), Class::Retry { after: None }),
        ];
        for (ans, want) in table {
            assert_eq!(classify(&ans), want, "{ans:?}");
        }
    }

    #[test]
    fn retry_after_paths_and_words() {
        assert_eq!(parse_retry_after(" 5 "), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(
            write_path("/x", "my org", "b/1"),
            "/x/api/v2/write?org=my%20org&bucket=b%2F1&precision=ms"
        );
        assert_eq!(
            describe(&a(400, r#"{"code":"invalid","message":"bad line"}"#, None)),
            "bad line"
        );
        assert_eq!(describe(&a(500, "", None)), "no description");
    }
}
