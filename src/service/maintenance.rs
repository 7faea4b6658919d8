//! `LastUsedFlusher`: a named background thread that persists last-used times every
//! `--flush-interval` seconds (monotonic timer) and once more on shutdown. One batch per
//! round, handed to the store in small chunks paced here (see `write_paced`) so they end
//! within half the interval (the final round does not pause); the store skips deleted
//! tokens. Then one sled flush. A failed round keeps its entries unflushed for the next one.
//! Each round then flushes token usage the same way (`service::usage`).

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::service::auth::failure_log::AuthFailureLog;
use crate::service::auth::last_used::{LastUsedTracker, Unflushed};
use crate::service::auth::usage::UsageTracker;
use crate::service::syslog::AuditCopy;
use crate::store::{LastUsedWrite, Store};

/// Outcome of one flush round.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlushReport {
    pub written: usize,
    pub duration: Duration,
}

/// How often the flusher runs, and the smallest move of a last-used time it writes.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub interval: Duration,
    pub resolution: Duration,
}

/// Persists what the tracker has that the store does not, spreading the writes over at
/// most `spread` (half the interval while serving; none for the final flush) and skipping
/// times that moved less than `resolution` since they were last written.
pub fn flush_last_used(
    store: &dyn Store,
    tracker: &LastUsedTracker,
    spread: Duration,
    resolution: Duration,
) -> crate::service::error::Result<FlushReport> {
    let started = Instant::now();
    let batch = tracker.unflushed(i64::try_from(resolution.as_secs()).unwrap_or(i64::MAX));
    if batch.is_empty() {
        return Ok(FlushReport::default());
    }
    let written = write_paced(store, &batch, spread)?;
    store.flush()?;
    tracker.mark_flushed(&batch);
    Ok(FlushReport {
        written,
        duration: started.elapsed(),
    })
}

/// Writes a round's batch through the store in chunks of 50, each followed by a pause of
/// four times its time, shortened so the whole batch ends within `spread`: the flush takes
/// at most a fifth of one core, in bursts shorter than a scheduler slice, so the event
/// loops sharing the core barely notice it. The chunk size and the pause ratio were chosen
/// by measurement (bench/results/2026-12-02-flush-pacing.md). Returns how many were written.
fn write_paced(
    store: &dyn Store,
    batch: &[Unflushed],
    spread: Duration,
) -> crate::store::Result<usize> {
    const CHUNK: usize = 50;
    const PAUSE_PER_BUSY: u32 = 4;
    let deadline = Instant::now() + spread;
    let chunks = batch.len().div_ceil(CHUNK);
    let mut written = 0;
    let mut pause = Duration::ZERO;
    let mut writes = Vec::with_capacity(CHUNK);
    for (n, chunk) in batch.chunks(CHUNK).enumerate() {
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        let started = Instant::now();
        writes.clear();
        writes.extend(chunk.iter().map(|u| LastUsedWrite {
            id: u.id,
            hash: Some(u.hash),
            seen: u.seen,
            flushed: u.flushed,
        }));
        written += store.write_last_used_chunk(&writes)?;
        let now = Instant::now();
        let left = u32::try_from(chunks - n).unwrap_or(u32::MAX).max(1);
        pause =
            (PAUSE_PER_BUSY * (now - started)).min(deadline.saturating_duration_since(now) / left);
    }
    Ok(written)
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

/// What each round works on: the store, the in-memory state it persists (last-used times,
/// usage, aggregated failures) and where its audit events also go.
pub struct Housekeeping {
    pub store: Arc<dyn Store>,
    pub tracker: Arc<LastUsedTracker>,
    pub usage: Arc<UsageTracker>,
    pub failures: Arc<AuthFailureLog>,
    pub audit_copy: AuditCopy,
    pub webhooks: Option<Arc<crate::service::webhooks::Webhooks>>,
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
        parts: Housekeeping,
        pacing: Pacing,
        status: Arc<Mutex<FlushStatus>>,
    ) -> std::io::Result<Self> {
        let control = Arc::new(Control {
            stop: Mutex::new(false),
            wake: Condvar::new(),
            status,
        });
        let thread_control = Arc::clone(&control);
        let thread = std::thread::Builder::new()
            .name("last-used-flusher".into())
            .spawn(move || run(&parts, pacing, &thread_control))?;
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

fn run(parts: &Housekeeping, pacing: Pacing, control: &Control) {
    let store = &*parts.store;
    let tracker = &*parts.tracker;
    let usage = &*parts.usage;
    let failures = &*parts.failures;
    let audit_copy = &parts.audit_copy;
    let webhooks = parts.webhooks.as_deref();
    let Pacing {
        interval,
        resolution,
    } = pacing;
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
        let copy = |event: &crate::domain::audit::AuditEvent| audit_copy.send(event);
        // The aggregated events may make webhook events too (`token.denied_network`, rate
        // limited by the webhooks: see `Webhooks::on_audit`).
        let copy_and_notify = |event: &crate::domain::audit::AuditEvent| {
            audit_copy.send(event);
            if let Some(w) = webhooks {
                w.on_audit(store, event, crate::domain::time::now_unix());
            }
        };
        if let Err(e) =
            failures.write_to_audit(store, crate::domain::time::now_unix(), &copy_and_notify)
        {
            log::error!("writing aggregated auth failures to the audit log failed: {e}");
        }
        if let Err(e) = super::rotation::end_overdue_previous_secrets(
            store,
            crate::domain::time::now_unix(),
            &copy,
        ) {
            log::error!("ending previous secrets whose overlap is over failed: {e}");
        }
        // The final flush writes every time that moved at all.
        let (spread, resolution) = if stopping {
            (Duration::ZERO, Duration::from_secs(1))
        } else {
            (interval / 2, resolution)
        };
        match flush_last_used(store, tracker, spread, resolution) {
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
        // Usage after last-used: the same pacing, in what is left of the spread.
        let now = crate::domain::time::now_unix();
        match super::usage::flush_usage(store, usage, now, spread / 2, &copy) {
            Ok(report) if stopping => {
                log::info!("final usage flush wrote {} token(s)", report.tokens);
            }
            Ok(_) => {}
            Err(e) => {
                crate::sync::lock(&control.status).failures += 1;
                log::error!(
                    "usage flush failed: {e}; will retry in {} s",
                    interval.as_secs()
                );
            }
        }
        store.maintain();
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::token::TokenId;
    use crate::store::test_support::TempStore;

    #[test]
    fn a_round_writes_every_chunk_and_skips_deleted_tokens() {
        let s = TempStore::new();
        let tracker = LastUsedTracker::default();
        let mut ids: Vec<TokenId> = Vec::new();
        for i in 0..120 {
            let (secret, record) = s.create_token(&format!("t{i}"), None, i).unwrap();
            tracker.record(record.id, &secret.hash(), 1_000 + i);
            ids.push(record.id);
        }
        s.delete_token(ids[7]).unwrap();
        let report =
            flush_last_used(&*s, &tracker, Duration::ZERO, Duration::from_secs(1)).unwrap();
        assert_eq!(report.written, 119);
        assert_eq!(s.stored_last_used(ids[7]).unwrap(), None);
        assert_eq!(s.stored_last_used(ids[119]).unwrap(), Some(1_119));
        assert!(tracker.unflushed(1).is_empty());
        // Nothing new: nothing written.
        assert_eq!(
            flush_last_used(&*s, &tracker, Duration::ZERO, Duration::from_secs(1))
                .unwrap()
                .written,
            0
        );
    }
}
