//! What `wardgate check` asks of the database: one authenticated request
//! (a write of zero points), and what it found, in words.

use bytes::Bytes;

use super::config;
use super::http::{self, describe, Client};

/// `wardgate check`: one authenticated request, and what it found, in words.
pub(crate) async fn check(cfg: &config::InfluxConfig) -> Result<String, String> {
    let url = cfg.url.clone().unwrap_or_default();
    let ep = config::parse_url(&url)?;
    let mut client = Client::new(
        ep.clone(),
        cfg.ca_file.as_deref(),
        cfg.token_file.as_deref(),
        cfg.timeout.get(),
    )
    .map_err(|e| e.to_string())?;
    // A zero-point write is authenticated (unlike /health) and names a
    // missing org or bucket.
    let path = http::write_path(&ep.base, &cfg.org, &cfg.bucket);
    let a = client
        .request(hyper::Method::POST, &path, &[], Bytes::new())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    match a.status {
        200..=299 => Ok(format!(
            "{url}: write to org {:?} bucket {:?} accepted ({})",
            cfg.org, cfg.bucket, a.status
        )),
        // Some servers refuse an empty body as bad: the token was accepted.
        400 => Ok(format!(
            "{url}: token accepted (an empty write answers 400: {})",
            describe(&a)
        )),
        401 | 403 => Err(format!(
            "{url}: token refused ({}): {}",
            a.status,
            describe(&a)
        )),
        404 => Err(format!(
            "{url}: org or bucket not found ({}): {}",
            a.status,
            describe(&a)
        )),
        s => Err(format!("{url}: answered {s}: {}", describe(&a))),
    }
}
