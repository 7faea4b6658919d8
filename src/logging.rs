//! Log lines to stderr (journald adds its own timestamp under systemd; we add ours for
//! terminals and files). One line per event. Callers never pass secrets: tokens, passwords
//! and Authorization headers are not loggable types; and as a second line of defence every
//! message and field has token-shaped text redacted ([`crate::redact`]) before it is written.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::redact::redact_secrets;

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

/// Writes one line: `2026-11-30T08:29:58Z INFO message` (or the JSON form
/// `{"time":…,"level":"info","message":…}`). Control characters in the message are escaped so
/// a logged value can never forge a second line.
pub fn write_line(level: Level, message: std::fmt::Arguments<'_>) {
    write_event(level, &message.to_string(), &[]);
}

/// A line with structured fields (request lines). Values must never be secrets.
pub fn write_event(level: Level, message: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    if !enabled(level) {
        return;
    }
    let now = crate::time_format::format_rfc3339(crate::time_format::now_unix());
    let mut line = String::with_capacity(96 + message.len());
    if FORMAT.load(Ordering::Relaxed) == 1 {
        let mut object = serde_json::Map::new();
        object.insert("time".into(), now.into());
        object.insert("level".into(), level.as_str().to_lowercase().into());
        object.insert("message".into(), redact_secrets(message).into());
        for (k, v) in fields {
            object.insert((*k).into(), redact_secrets(&v.to_string()).into());
        }
        line.push_str(&serde_json::Value::Object(object).to_string());
    } else {
        line.push_str(&now);
        line.push(' ');
        line.push_str(level.as_str());
        line.push(' ');
        push_escaped(&mut line, message);
        for (k, v) in fields {
            line.push(' ');
            line.push_str(k);
            line.push('=');
            push_escaped(&mut line, &v.to_string());
        }
    }
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn push_escaped(line: &mut String, text: &str) {
    for c in redact_secrets(text).chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
}

#[macro_export]
macro_rules! log_info {
    ($($arg:tt)*) => { $crate::logging::write_line($crate::logging::Level::Info, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! log_warn {
    ($($arg:tt)*) => { $crate::logging::write_line($crate::logging::Level::Warn, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! log_error {
    ($($arg:tt)*) => { $crate::logging::write_line($crate::logging::Level::Error, format_args!($($arg)*)) };
}
