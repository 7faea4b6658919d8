//! Log lines to stderr (journald adds its own timestamp under systemd; we add ours for
//! terminals and files). One line per event, from `log::info!`/`warn!`/`error!` anywhere in
//! the process (this module is the `log` facade's backend, so sled's and mio's lines arrive
//! too) or from [`write_event`] with structured fields (the request log). Callers never pass
//! secrets: tokens, passwords and Authorization headers are not loggable types; and as a
//! second line of defence every message and field has token-shaped text redacted
//! ([`crate::domain::redact`]) before it is written.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::domain::redact::redact_secrets;

/// Text lines or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

static FORMAT: AtomicU8 = AtomicU8::new(0);
static MIN_LEVEL: AtomicU8 = AtomicU8::new(0);

/// Sets the process-wide format and lowest level (called once at start-up).
pub fn configure(format: LogFormat, min_level: Level) {
    FORMAT.store(u8::from(format == LogFormat::Json), Ordering::Relaxed);
    MIN_LEVEL.store(min_level as u8, Ordering::Relaxed);
    install();
}

/// Whether lines at `level` are written.
pub fn enabled(level: Level) -> bool {
    level as u8 >= MIN_LEVEL.load(Ordering::Relaxed)
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info = 0,
    Warn = 1,
    Error = 2,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// A line with structured fields (request lines). Values must never be secrets.
///
/// A text line is built in this thread's reused buffers (a request line per request must not
/// cost an allocation per field) and written with one `write` call, or held back on a thread
/// that batches ([`batch_this_thread`]) until its next [`flush_thread`].
pub fn write_event(level: Level, message: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    if !enabled(level) {
        return;
    }
    let now = crate::domain::time::rfc3339_text(crate::domain::time::now_unix());
    if FORMAT.load(Ordering::Relaxed) == 1 {
        let mut object = serde_json::Map::new();
        object.insert("time".into(), now.as_str().into());
        object.insert("level".into(), level.as_str().to_lowercase().into());
        object.insert("message".into(), redact_secrets(message).into());
        for (k, v) in fields {
            object.insert((*k).into(), redact_secrets(&v.to_string()).into());
        }
        let mut line = serde_json::Value::Object(object).to_string();
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        return;
    }
    LINES.with(|lines| {
        let Ok(mut lines) = lines.try_borrow_mut() else {
            return;
        };
        let ThreadLines {
            line,
            value,
            pending,
            batching,
        } = &mut *lines;
        line.clear();
        line.push_str(now.as_str());
        line.push(' ');
        line.push_str(level.as_str());
        line.push(' ');
        push_escaped(line, message);
        for (k, v) in fields {
            line.push(' ');
            line.push_str(k);
            line.push('=');
            value.clear();
            let _ = std::fmt::Write::write_fmt(value, format_args!("{v}"));
            push_escaped(line, value);
        }
        line.push('\n');
        if *batching {
            pending.push_str(line);
            if pending.len() >= MAX_PENDING {
                write_out(pending);
            }
        } else {
            write_out(line);
        }
    });
}

/// A thread's reused line buffers, and the lines it holds back while batching.
#[derive(Default)]
struct ThreadLines {
    line: String,
    value: String,
    pending: String,
    batching: bool,
}

thread_local! {
    static LINES: std::cell::RefCell<ThreadLines> = std::cell::RefCell::new(ThreadLines::default());
}

/// Lines a batching thread holds back before writing them anyway.
const MAX_PENDING: usize = 32 * 1024;

/// From now on this thread holds its lines back until [`flush_thread`] (an event loop: one
/// `write` per turn of the loop instead of one per request, as a buffered access log does).
pub fn batch_this_thread() {
    LINES.with(|lines| {
        if let Ok(mut lines) = lines.try_borrow_mut() {
            lines.batching = true;
        }
    });
}

/// Writes the lines this thread held back.
pub fn flush_thread() {
    LINES.with(|lines| {
        if let Ok(mut lines) = lines.try_borrow_mut() {
            write_out(&mut lines.pending);
        }
    });
}

/// Writes `text` to stderr with one call and empties it (keeping a modest capacity).
fn write_out(text: &mut String) {
    if text.is_empty() {
        return;
    }
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
    text.clear();
    if text.capacity() > 2 * MAX_PENDING {
        *text = String::new();
    }
}

fn push_escaped(line: &mut String, text: &str) {
    let text = redact_secrets(text);
    if !text.bytes().any(|b| b.is_ascii_control()) && text.is_ascii() {
        line.push_str(&text);
        return;
    }
    for c in text.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
}

/// The `log` backend: every `log::info!`/`warn!`/`error!` in pa-auth, and what its
/// dependencies log through the `log` facade (sled's "failed to flush", mio), becomes one of
/// our lines. pa-auth's own records follow the configured level; a dependency's are written
/// from `Warn` up (their `info` and below is their own diagnostics) and name their source.
struct Bridge;

static BRIDGE: Bridge = Bridge;

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        match level_of(metadata.level()) {
            Some(level) if is_own(metadata.target()) => enabled(level),
            Some(level) => level >= Level::Warn && enabled(level),
            None => false,
        }
    }

    fn log(&self, record: &log::Record<'_>) {
        let Some(level) = level_of(record.level()) else {
            return;
        };
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        if is_own(record.target()) {
            write_event(level, &message, &[]);
        } else {
            write_event(level, &message, &[("source", &record.target())]);
        }
    }

    fn flush(&self) {
        flush_thread();
    }
}

fn level_of(level: log::Level) -> Option<Level> {
    match level {
        log::Level::Error => Some(Level::Error),
        log::Level::Warn => Some(Level::Warn),
        log::Level::Info => Some(Level::Info),
        log::Level::Debug | log::Level::Trace => None,
    }
}

fn is_own(target: &str) -> bool {
    target == "pa_auth" || target.starts_with("pa_auth::")
}

/// Routes the `log` facade here (idempotent: a second call, as in tests, changes nothing).
pub fn install() {
    if log::set_logger(&BRIDGE).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;

    fn wanted(level: log::Level, target: &str) -> bool {
        BRIDGE.enabled(&log::Metadata::builder().level(level).target(target).build())
    }

    #[test]
    fn dependencies_reach_the_log_from_warn_up_and_ours_at_the_configured_level() {
        assert!(wanted(log::Level::Error, "sled::pagecache::logger"));
        assert!(wanted(log::Level::Warn, "mio::poll"));
        assert!(!wanted(log::Level::Info, "sled::config"));
        assert!(wanted(log::Level::Info, "pa_auth::serve"));
        assert!(wanted(log::Level::Info, "pa_auth"));
        assert!(!wanted(log::Level::Debug, "pa_auth::serve"));
        assert!(!wanted(log::Level::Trace, "sled"));
        assert!(!is_own("pa_authx"));
    }
}
