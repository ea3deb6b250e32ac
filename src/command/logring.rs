//! The last log lines in memory, for `log.tail`: a tracing layer that keeps
//! a bounded ring (1,000 lines, each cut at 1,000 characters). No journal
//! access is needed. `main` installs [`layer`]; without it the ring is empty.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context;

use super::request::{Level, MAX_LOG_LINES};
use crate::model::now_ms;

/// The longest line kept, in characters.
pub const MAX_LINE_CHARS: usize = 1000;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogLine {
    pub ts: i64,
    pub level: &'static str,
    pub target: String,
    pub message: String,
    #[serde(skip)]
    rank: Level,
}

/// A bounded ring of lines.
#[derive(Debug, Default)]
pub struct LogRing {
    lines: Mutex<VecDeque<LogLine>>,
}

impl LogRing {
    fn push(&self, line: LogLine) {
        let mut l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() >= MAX_LOG_LINES {
            l.pop_front();
        }
        l.push_back(line);
    }

    /// The last `n` lines at `min` or above, oldest first.
    pub fn tail(&self, n: usize, min: Option<Level>) -> Vec<LogLine> {
        let l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<LogLine> = l
            .iter()
            .rev()
            .filter(|x| min.is_none_or(|m| x.rank >= m))
            .take(n)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

static RING: OnceLock<LogRing> = OnceLock::new();

/// The process's ring.
pub fn ring() -> &'static LogRing {
    RING.get_or_init(LogRing::default)
}

/// The layer that fills [`ring`], with its own filter ([`filter`]): the
/// journal's (`WARDGATE_LOG`) does not reach it.
pub fn layer<S>() -> tracing_subscriber::filter::Filtered<RingLayer, Targets, S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    RingLayer.with_filter(filter())
}

/// What the ring keeps, whatever the journal's filter says: the gateway's
/// own lines at info and above. A technician may set `WARDGATE_LOG=trace`
/// on a box for a day; the lines of rumqttc, hyper or rustls at debug and
/// trace (packets, peers' addresses and details) still never reach the
/// operations centre through `log.tail`.
pub fn filter() -> Targets {
    Targets::new().with_target("wardgate", tracing::Level::INFO)
}

pub struct RingLayer;

struct Fields(String);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(
                self.0,
                "{}{value}",
                if self.0.is_empty() { "" } else { " " }
            );
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let sep = if self.0.is_empty() { "" } else { " " };
            let _ = write!(self.0, "{sep}{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

fn cut(mut s: String) -> String {
    if let Some((i, _)) = s.char_indices().nth(MAX_LINE_CHARS) {
        s.truncate(i);
        s.push('…');
    }
    s
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        let meta = event.metadata();
        let rank = Level::from_tracing(meta.level());
        ring().push(LogLine {
            ts: now_ms(),
            level: rank.word(),
            target: meta.target().to_owned(),
            message: cut(f.0.trim_start().to_owned()),
            rank,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize, rank: Level) -> LogLine {
        LogLine {
            ts: i as i64,
            level: rank.word(),
            target: "t".into(),
            message: format!("line {i}"),
            rank,
        }
    }

    #[test]
    fn ring_is_bounded_and_filters_by_level() {
        let r = LogRing::default();
        for i in 0..1500 {
            r.push(line(
                i,
                if i % 10 == 0 {
                    Level::Warn
                } else {
                    Level::Info
                },
            ));
        }
        let all = r.tail(5000, None);
        assert_eq!(all.len(), MAX_LOG_LINES);
        assert_eq!(all[0].message, "line 500");
        assert_eq!(all.last().unwrap().message, "line 1499");
        let warn = r.tail(3, Some(Level::Warn));
        let m: Vec<&str> = warn.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(m, vec!["line 1470", "line 1480", "line 1490"]);
        assert!(r.tail(10, Some(Level::Error)).is_empty());
    }

    #[test]
    fn long_lines_are_cut() {
        let s = cut("é".repeat(MAX_LINE_CHARS + 5));
        assert_eq!(s.chars().count(), MAX_LINE_CHARS + 1);
        assert_eq!(cut("short".into()), "short");
    }

    #[test]
    fn the_layer_records_message_and_fields() {
        use tracing_subscriber::layer::SubscriberExt;
        let sub = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(device = "ups1", n = 3, "logring test line");
        });
        let t = ring().tail(MAX_LOG_LINES, Some(Level::Warn));
        let l = t
            .iter()
            .find(|l| l.message.starts_with("logring test line"))
            .expect("recorded");
        assert_eq!(l.message, "logring test line device=\"ups1\" n=3");
        assert_eq!(l.level, "warn");
    }
}
