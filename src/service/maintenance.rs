//! `LastUsedFlusher`: a named background thread that persists last-used times every
//! `--flush-interval` seconds (monotonic timer) and once more on shutdown. One batch per
//! round, written by the store in small paced chunks that skip deleted tokens and end
//! within half the interval (the final round does not pause), then one sled flush.
//! A failed round keeps its entries unflushed for the next one.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::service::auth::failure_log::AuthFailureLog;
use crate::service::auth::last_used::LastUsedTracker;
use crate::store::Store;

/// Outcome of one flush round.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlushReport {
    pub written: usize,
    pub duration: Duration,
}

/// Persists what the tracker has that the store does not, spreading the writes over at
/// most `spread` (half the interval while serving; none for the final flush).
pub fn flush_last_used(
    store: &Store,
    tracker: &LastUsedTracker,
    spread: Duration,
) -> crate::service::error::Result<FlushReport> {
    let started = Instant::now();
    let batch = tracker.unflushed();
    if batch.is_empty() {
        return Ok(FlushReport::default());
    }
    let written = store.write_tracked_last_used(&batch, spread)?;
    store.flush()?;
    tracker.mark_flushed(&batch);
    Ok(FlushReport {
        written,
        duration: started.elapsed(),
    })
}

/// Figures from the most recent round, for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlushStatus {
    /// Unix seconds of the last successful round.
    pub last_success_unix: i64,
    pub last_duration: Duration,
    pub failures: u64,
}

struct Control {
    stop: Mutex<bool>,
    wake: Condvar,
    status: Arc<Mutex<FlushStatus>>,
}

/// Handle to the flusher thread; `shutdown` stops it after a final flush.
pub struct LastUsedFlusher {
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

impl LastUsedFlusher {
    /// Starts the thread; `status` is updated after every round (for metrics), and the
    /// aggregated failed authentications are written to the audit log each round too.
    pub fn start(
        store: Arc<Store>,
        tracker: Arc<LastUsedTracker>,
        interval: Duration,
        status: Arc<Mutex<FlushStatus>>,
        failures: Arc<AuthFailureLog>,
    ) -> std::io::Result<Self> {
        let control = Arc::new(Control {
            stop: Mutex::new(false),
            wake: Condvar::new(),
            status,
        });
        let thread_control = Arc::clone(&control);
        let thread = std::thread::Builder::new()
            .name("last-used-flusher".into())
            .spawn(move || run(&store, &tracker, &failures, interval, &thread_control))?;
        Ok(LastUsedFlusher {
            control,
            thread: Some(thread),
        })
    }

    /// Stops the thread after one final flush and waits for it.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        *crate::sync::lock(&self.control.stop) = true;
        self.control.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LastUsedFlusher {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn run(
    store: &Store,
    tracker: &LastUsedTracker,
    failures: &AuthFailureLog,
    interval: Duration,
    control: &Control,
) {
    let mut next = Instant::now() + interval;
    loop {
        let stopping = {
            let mut stop = crate::sync::lock(&control.stop);
            while !*stop {
                let now = Instant::now();
                if now >= next {
                    break;
                }
                stop = crate::sync::wait_timeout(&control.wake, stop, next - now);
            }
            *stop
        };
        next = Instant::now() + interval;
        if let Err(e) = failures.write_to_audit(store, crate::domain::time::now_unix()) {
            log::error!("writing aggregated auth failures to the audit log failed: {e}");
        }
        let spread = if stopping {
            Duration::ZERO
        } else {
            interval / 2
        };
        match flush_last_used(store, tracker, spread) {
            Ok(report) => {
                let mut s = crate::sync::lock(&control.status);
                s.last_success_unix = crate::domain::time::now_unix();
                s.last_duration = report.duration;
                drop(s);
                if stopping {
                    log::info!("final last-used flush wrote {} token(s)", report.written);
                }
            }
            Err(e) => {
                crate::sync::lock(&control.status).failures += 1;
                log::error!(
                    "last-used flush failed: {e}; will retry in {} s",
                    interval.as_secs()
                );
            }
        }
        store.restrict_file_modes();
        if stopping {
            return;
        }
    }
}
