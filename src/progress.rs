//! Progress of long operations (schema upgrade, backup, restore, migrate, offline listings):
//! count, rate and ETA, shown where the operator looks. On a terminal, one line on stderr
//! redrawn in place (at most ten times a second, a bar when the total is known); without
//! one (journald, a pipe, a test), a `log` line at info level every 5 s and a final line.
//! An operation that ends within the first interval shows nothing: only long ones report.
//!
//! Reporting costs next to nothing per call: [`Progress::advance`] adds to a counter and
//! reads the clock only every `stride` items, a stride sized from the measured rate so the
//! clock is read about twenty times a second however fast or slow the items come.
//!
//! The server reports only to its log ([`report_to_log_only`]): its stderr is the log, and
//! a redrawn line would interleave with other threads' log lines.
//!
//! Test-only: `PA_AUTH_PROGRESS_INTERVAL_MS` replaces both intervals (5 s for log lines,
//! 100 ms for redraws), so a test sees figures from a short operation.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Between two log lines, without a terminal.
const LOG_INTERVAL: Duration = Duration::from_secs(5);
/// Between two redraws on a terminal.
const REDRAW_INTERVAL: Duration = Duration::from_millis(100);
/// How often the clock is read, at most: well inside both intervals.
const CHECK_PERIOD: Duration = Duration::from_millis(50);
/// Characters of the bar between its brackets.
const BAR_WIDTH: u64 = 20;
/// The test-only override of both intervals, in milliseconds.
pub const INTERVAL_ENV: &str = "PA_AUTH_PROGRESS_INTERVAL_MS";

static LOG_ONLY: AtomicBool = AtomicBool::new(false);

/// From now on every reporter in this process logs, even with stderr on a terminal (the
/// server calls it: its stderr is its log).
pub fn report_to_log_only() {
    LOG_ONLY.store(true, Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// Redraw one line on stderr.
    Terminal,
    /// A `log::info!` line each interval.
    Log,
    /// Nothing ([`Progress::silent`]).
    Silent,
}

/// One long operation's progress. Create it with [`Progress::start`], feed it with
/// [`Progress::advance`] or [`Progress::set`] (the total may grow, e.g. page by page, with
/// [`Progress::set_total`]), end it with [`Progress::finish`]. Dropped unfinished (an
/// error), it ends the terminal line so the error message starts on its own.
#[derive(Debug)]
pub struct Progress {
    what: String,
    unit: &'static str,
    total: Option<u64>,
    done: u64,
    output: Output,
    interval: Duration,
    started: Instant,
    /// When figures were last shown (`None`: not yet).
    shown_at: Option<Instant>,
    /// The clock is read again once `done` reaches this.
    next_check: u64,
    checked_at: Instant,
    checked_done: u64,
    /// A terminal line was drawn (and must be ended).
    drawn: bool,
    finished: bool,
}

impl Progress {
    /// Starts reporting `what` ("restoring"), with `total` items when known. Counts "entries"
    /// unless [`Progress::unit`] names them.
    pub fn start(what: &str, total: Option<u64>) -> Progress {
        let terminal = !LOG_ONLY.load(Ordering::Relaxed) && std::io::stderr().is_terminal();
        let output = if terminal {
            Output::Terminal
        } else {
            Output::Log
        };
        let interval = std::env::var(INTERVAL_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or(if terminal {
                REDRAW_INTERVAL
            } else {
                LOG_INTERVAL
            });
        Progress::new(what, total, output, interval, Instant::now())
    }

    /// A reporter that shows nothing (for callers that report some other way).
    pub fn silent() -> Progress {
        Progress::new("", None, Output::Silent, Duration::MAX, Instant::now())
    }

    fn new(
        what: &str,
        total: Option<u64>,
        output: Output,
        interval: Duration,
        now: Instant,
    ) -> Progress {
        Progress {
            what: what.to_owned(),
            unit: "entries",
            total,
            done: 0,
            output,
            interval,
            started: now,
            shown_at: None,
            next_check: 1,
            checked_at: now,
            checked_done: 0,
            drawn: false,
            finished: false,
        }
    }

    /// Names what is counted ("tokens", "entries").
    pub fn unit(mut self, unit: &'static str) -> Progress {
        self.unit = unit;
        self
    }

    /// `n` more items done.
    pub fn advance(&mut self, n: u64) {
        self.done = self.done.saturating_add(n);
        if self.done >= self.next_check {
            self.check(Instant::now());
        }
    }

    /// `done` items done so far.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        if self.done >= self.next_check {
            self.check(Instant::now());
        }
    }

    /// A total learned (or grown) on the way.
    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    /// Items done so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// The total, when known.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The current figures as one line: `restoring: 120000/1000000 entries (12%), 48000/s,
    /// ETA 18 s` (for a supervisor's status text, say).
    pub fn line(&self) -> String {
        figures(
            &self.what,
            self.unit,
            self.done,
            self.total,
            self.started.elapsed(),
        )
    }

    /// Ends the operation: the final figures (if any were shown; a short operation stays
    /// quiet), and the terminal line is ended.
    pub fn finish(mut self) {
        self.finished = true;
        if self.shown_at.is_none() {
            return;
        }
        let line = final_figures(&self.what, self.unit, self.done, self.started.elapsed());
        match self.output {
            Output::Terminal => {
                let _ = write!(std::io::stderr().lock(), "\r{line}\x1b[K\n");
            }
            Output::Log => log::info!("{line}"),
            Output::Silent => {}
        }
    }

    /// Reads the clock: shows the figures when an interval has passed, and resizes the
    /// stride so the next read comes about [`CHECK_PERIOD`] later.
    fn check(&mut self, now: Instant) {
        let since = now.saturating_duration_since(self.checked_at);
        let items = self.done.saturating_sub(self.checked_done);
        let period = CHECK_PERIOD
            .min(self.interval / 2)
            .max(Duration::from_micros(1));
        let stride = if since.is_zero() {
            items.saturating_mul(2)
        } else {
            (items as f64 * period.as_secs_f64() / since.as_secs_f64()) as u64
        };
        self.next_check = self.done.saturating_add(stride.clamp(1, 1 << 20));
        self.checked_at = now;
        self.checked_done = self.done;
        if self.output == Output::Silent {
            return;
        }
        let due = self.shown_at.unwrap_or(self.started) + self.interval;
        if now < due {
            return;
        }
        self.shown_at = Some(now);
        let elapsed = now.saturating_duration_since(self.started);
        match self.output {
            Output::Terminal => {
                let line = format!(
                    "{}{}",
                    bar(self.done, self.total),
                    figures(&self.what, self.unit, self.done, self.total, elapsed)
                );
                let _ = write!(std::io::stderr().lock(), "\r{line}\x1b[K");
                self.drawn = true;
            }
            Output::Log => log::info!(
                "{}",
                figures(&self.what, self.unit, self.done, self.total, elapsed)
            ),
            Output::Silent => {}
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.drawn && !self.finished {
            let _ = writeln!(std::io::stderr().lock());
        }
    }
}

/// `[######              ] ` when the total is known, else nothing.
fn bar(done: u64, total: Option<u64>) -> String {
    let Some(total) = total.filter(|t| *t > 0) else {
        return String::new();
    };
    let filled = (u128::from(done.min(total)) * u128::from(BAR_WIDTH) / u128::from(total)) as usize;
    format!(
        "[{}{}] ",
        "#".repeat(filled),
        " ".repeat(BAR_WIDTH as usize - filled)
    )
}

/// `what: done/total unit (pct%), rate/s, ETA …`; without a total `what: done unit, rate/s`.
fn figures(what: &str, unit: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    match total {
        Some(total) => {
            let percent = (u128::from(done.min(total)) * 100)
                .checked_div(u128::from(total))
                .unwrap_or(100);
            let left = total.saturating_sub(done);
            let eta = if left == 0 {
                "ETA 0 s".to_owned()
            } else if rate > 0.0 {
                format!("ETA {}", duration_text(left as f64 / rate))
            } else {
                "ETA unknown".to_owned()
            };
            format!(
                "{what}: {done}/{total} {unit} ({percent}%), {}, {eta}",
                rate_text(rate)
            )
        }
        None => format!("{what}: {done} {unit}, {}", rate_text(rate)),
    }
}

/// `what: done unit in 20.8 s (48000/s)`.
fn final_figures(what: &str, unit: &str, done: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    format!(
        "{what}: {done} {unit} done in {secs:.1} s ({})",
        rate_text(rate)
    )
}

/// Whole items a second; one decimal below ten.
fn rate_text(rate: f64) -> String {
    if rate < 10.0 {
        format!("{rate:.1}/s")
    } else {
        format!("{}/s", rate.round() as u64)
    }
}

/// `18 s`, `3 min 05 s`, `2 h 07 min`.
fn duration_text(secs: f64) -> String {
    let s = secs.ceil() as u64;
    if s < 100 {
        format!("{s} s")
    } else if s < 2 * 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, s % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_with_a_total_have_count_percent_rate_and_eta() {
        let line = figures(
            "restoring",
            "tokens",
            120_000,
            Some(1_000_000),
            Duration::from_millis(2_500),
        );
        assert_eq!(
            line,
            "restoring: 120000/1000000 tokens (12%), 48000/s, ETA 19 s"
        );
    }

    #[test]
    fn figures_without_a_total_have_count_and_rate_only() {
        let line = figures("listing", "tokens", 300, None, Duration::from_secs(4));
        assert_eq!(line, "listing: 300 tokens, 75/s");
    }

    #[test]
    fn slow_starts_and_overshoots_read_sensibly() {
        let at_start = figures("upgrading", "entries", 0, Some(10), Duration::ZERO);
        assert_eq!(at_start, "upgrading: 0/10 entries (0%), 0.0/s, ETA unknown");
        let over = figures("restoring", "entries", 12, Some(10), Duration::from_secs(1));
        assert_eq!(over, "restoring: 12/10 entries (100%), 12/s, ETA 0 s");
        let empty = figures("restoring", "entries", 0, Some(0), Duration::from_secs(1));
        assert_eq!(empty, "restoring: 0/0 entries (100%), 0.0/s, ETA 0 s");
    }

    #[test]
    fn long_etas_are_in_minutes_and_hours() {
        assert_eq!(duration_text(18.0), "18 s");
        assert_eq!(duration_text(99.2), "1 min 40 s");
        assert_eq!(duration_text(185.0), "3 min 05 s");
        assert_eq!(duration_text(7_620.0), "2 h 07 min");
        assert_eq!(rate_text(0.5), "0.5/s");
        assert_eq!(rate_text(47_999.6), "48000/s");
    }

    #[test]
    fn the_bar_fills_with_the_count() {
        assert_eq!(bar(0, Some(10)), format!("[{}] ", " ".repeat(20)));
        assert_eq!(
            bar(5, Some(10)),
            format!("[{}{}] ", "#".repeat(10), " ".repeat(10))
        );
        assert_eq!(bar(11, Some(10)), format!("[{}] ", "#".repeat(20)));
        assert_eq!(bar(5, None), "");
    }

    #[test]
    fn the_final_line_has_count_time_and_rate() {
        assert_eq!(
            final_figures("restoring", "entries", 5_000, Duration::from_millis(2_000)),
            "restoring: 5000 entries done in 2.0 s (2500/s)"
        );
    }

    /// The clock is read every `stride` items, sized from the rate: fast items are not
    /// each a clock read, and nothing is shown before the first interval.
    #[test]
    fn the_clock_is_read_by_stride_and_figures_wait_an_interval() {
        let t0 = Instant::now();
        let mut p = Progress::new("x", Some(1_000_000), Output::Silent, Duration::MAX, t0);
        p.done = 1;
        p.check(t0 + Duration::from_millis(1));
        // 1 item a ms: the next read about 50 items on.
        assert!((40..=60).contains(&(p.next_check - p.done)), "{p:?}");
        p.done = 10_001;
        p.check(t0 + Duration::from_millis(11));
        // 1,000 items a ms: about 50,000 on.
        assert!(
            (40_000..=60_000).contains(&(p.next_check - p.done)),
            "{p:?}"
        );
        assert!(p.shown_at.is_none());

        let mut shown = Progress::new("x", Some(10), Output::Log, Duration::from_secs(5), t0);
        shown.done = 3;
        shown.check(t0 + Duration::from_secs(1));
        assert!(shown.shown_at.is_none(), "within the first interval");
        shown.check(t0 + Duration::from_secs(6));
        assert!(shown.shown_at.is_some());
    }
}
