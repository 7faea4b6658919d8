//! Log lines to stderr (journald adds its own timestamp under systemd; we add ours for
//! terminals and files). One line per event. Callers never pass secrets: tokens, passwords
//! and Authorization headers are not loggable types.

use std::io::Write;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warn,
    Error,
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

/// Writes one line: `2026-11-30T08:29:58Z INFO message`. Control characters in the message
/// are escaped so a logged value can never forge a second line.
pub fn write_line(level: Level, message: std::fmt::Arguments<'_>) {
    let now = crate::time_format::format_rfc3339(crate::time_format::now_unix());
    let text = message.to_string();
    let mut line = String::with_capacity(text.len() + 32);
    line.push_str(&now);
    line.push(' ');
    line.push_str(level.as_str());
    line.push(' ');
    for c in text.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
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
