//! The webhook sender: one named thread per receiver on each node, so a slow receiver delays
//! only its own events. Each round (every second, or at once when an event is queued) a
//! thread renews the store's sender lease; only on the holder do they deliver what is due for
//! their receiver, oldest first, one at a time, renewing the lease between deliveries so
//! they never send on a lapsed one; the first thread also runs the lifecycle scan (every
//! `--webhook-scan-interval`) and counts the outbox. An entry
//! leaves the outbox only after its receiver answered 2xx; a failure is retried with backoff
//! (`domain::webhook::retry_after_ms`), and an entry undelivered for 3 days is dropped and
//! counted. Nothing is held in memory that the outbox does not also hold: stopping (or
//! `kill -9`) loses nothing, and the next holder resends what was in flight, same id.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Webhooks;
use crate::domain::webhook::{self, TokenFacts};
use crate::service::auth::last_used::LastUsedTracker;
use crate::store::{OutboxEntry, ScanMark, Store};

/// How long the lease lasts unless renewed; renewed every [`RENEW`].
const LEASE_MS: i64 = 15_000;
const RENEW: Duration = Duration::from_secs(5);
/// Entries fetched per round.
const BATCH: usize = 50;

/// Wakes the sender early (an event was queued) or stops it.
#[derive(Debug, Default)]
pub(super) struct Nudge {
    state: Mutex<(bool, bool)>,
    bell: Condvar,
}

impl Nudge {
    pub(super) fn wake(&self) {
        crate::sync::lock(&self.state).0 = true;
        self.bell.notify_all();
    }

    fn stop(&self) {
        crate::sync::lock(&self.state).1 = true;
        self.bell.notify_all();
    }

    fn stopped(&self) -> bool {
        crate::sync::lock(&self.state).1
    }

    /// Waits up to `timeout` for a wake or a stop; whether to stop.
    fn wait(&self, timeout: Duration) -> bool {
        let mut state = crate::sync::lock(&self.state);
        if !state.0 && !state.1 {
            state = crate::sync::wait_timeout(&self.bell, state, timeout);
        }
        state.0 = false;
        state.1
    }
}

/// Handle to the sender threads; `shutdown` stops them (nothing to flush: the outbox is
/// durable).
pub struct WebhookSender {
    webhooks: Arc<Webhooks>,
    store: Arc<dyn Store>,
    threads: Vec<JoinHandle<()>>,
}

impl WebhookSender {
    pub fn start(
        webhooks: Arc<Webhooks>,
        store: Arc<dyn Store>,
        tracker: Arc<LastUsedTracker>,
    ) -> std::io::Result<WebhookSender> {
        let mut sender = WebhookSender {
            webhooks: Arc::clone(&webhooks),
            store: Arc::clone(&store),
            threads: Vec::new(),
        };
        for receiver in 0..webhooks.settings.receivers.len() {
            let (w, s, t) = (
                Arc::clone(&webhooks),
                Arc::clone(&store),
                Arc::clone(&tracker),
            );
            // On an error the handle's drop stops the threads already started.
            sender.threads.push(
                std::thread::Builder::new()
                    .name(format!("webhook-sender-{receiver}"))
                    .spawn(move || run(&w, &*s, &t, receiver))?,
            );
        }
        Ok(sender)
    }

    /// Stops after the delivery in flight (if any) and gives the lease up.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.webhooks.nudge.stop();
        if self.threads.is_empty() {
            return;
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.store.release_webhook_lease();
        self.webhooks
            .figures
            .sending
            .store(false, Ordering::Relaxed);
    }
}

impl Drop for WebhookSender {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// One thread's loop, for receiver number `receiver`; the first also scans and counts.
fn run(webhooks: &Webhooks, store: &dyn Store, tracker: &LastUsedTracker, receiver: usize) {
    let url = webhooks.settings.receivers[receiver].raw.as_str();
    let first = receiver == 0;
    let mut renewed: Option<Instant> = None;
    let mut next_scan = Instant::now();
    let mut next_count = Instant::now();
    loop {
        if first && Instant::now() >= next_count {
            count_backlog(webhooks, store);
            next_count = Instant::now() + RENEW;
        }
        if hold_lease(webhooks, store, &mut renewed) {
            if first && Instant::now() >= next_scan {
                if let Err(e) = scan(webhooks, store, tracker) {
                    log::error!("webhook lifecycle scan failed: {e}; will retry");
                }
                next_scan = Instant::now() + webhooks.settings.scan_interval;
            }
            if let Err(e) = deliver_due(webhooks, store, url, &mut renewed) {
                log::error!("reading the webhook outbox failed: {e}; will retry");
            }
        }
        if webhooks.nudge.wait(Duration::from_secs(1)) {
            return;
        }
    }
}

/// Renews the lease when it is due for renewal; whether this node holds it.
fn hold_lease(webhooks: &Webhooks, store: &dyn Store, renewed: &mut Option<Instant>) -> bool {
    if renewed.is_some_and(|at| at.elapsed() < RENEW) {
        return true;
    }
    let held = match store.hold_webhook_lease(LEASE_MS) {
        Ok(held) => held,
        Err(e) => {
            log::warn!("webhook sender lease: {e}");
            false
        }
    };
    let was = webhooks.figures.sending.swap(held, Ordering::Relaxed);
    if held && !was {
        log::info!("this node sends the webhooks now");
    }
    *renewed = held.then(Instant::now);
    held
}

fn count_backlog(webhooks: &Webhooks, store: &dyn Store) {
    match store.webhook_backlog() {
        Ok(b) => {
            let f = &webhooks.figures;
            f.pending.store(b.pending, Ordering::Relaxed);
            f.oldest_queued_ms
                .store(b.oldest_queued_ms.unwrap_or(0), Ordering::Relaxed);
        }
        Err(e) => log::warn!("counting the webhook outbox failed: {e}"),
    }
}

/// Queues the lifecycle events whose moment passed since the last scan (at most the last 7
/// days: a node stopped for longer does not flood the receivers with old news). The first
/// scan ever only sets the mark.
fn scan(
    webhooks: &Webhooks,
    store: &dyn Store,
    tracker: &LastUsedTracker,
) -> crate::store::Result<()> {
    let now = crate::domain::time::now_unix();
    let mark = store.webhook_scan_mark()?;
    let Some(last) = mark else {
        store.enqueue_webhooks(
            &[],
            Some(ScanMark {
                expected: None,
                to: now,
            }),
        )?;
        return Ok(());
    };
    let from = last.max(webhook::earliest_catch_up(now));
    if from >= now {
        return Ok(());
    }
    let unused = webhooks.settings.unused_after_days;
    let now_ms = crate::domain::time::now_unix_ms();
    let mut entries: Vec<OutboxEntry> = Vec::new();
    for (record, stored_last_used) in store.lifecycle_candidates(from, now, unused)? {
        let id = record.id.to_string();
        // A use this node saw but has not flushed yet counts too.
        let last_used = match (tracker.get(&record.id), stored_last_used) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let facts = TokenFacts {
            id: &id,
            name: &record.name,
            owner: record.owner.as_deref(),
            created_at: record.created_at(),
            expires_at: record.expires_at,
            last_activity: last_used.unwrap_or(record.created_at()),
            last_used_at: last_used,
        };
        for (kind, moment) in webhook::due_between(&facts, unused, from, now) {
            let event_id = webhook::lifecycle_event_id(&id, kind, moment);
            let body = webhook::lifecycle_body(&facts, kind, moment);
            entries.extend(webhooks.entries(&event_id, &body, now_ms));
        }
    }
    if !entries.is_empty() && !webhooks.room_for(entries.len()) {
        // Dropped and counted; the mark still moves, or the scan would repeat forever.
        entries.clear();
    }
    let n = entries.len();
    if store.enqueue_webhooks(
        &entries,
        Some(ScanMark {
            expected: mark,
            to: now,
        }),
    )? && n > 0
    {
        webhooks
            .figures
            .pending
            .fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// Delivers what is due for receiver `url`, a batch at a time, while this node holds the
/// lease.
fn deliver_due(
    webhooks: &Webhooks,
    store: &dyn Store,
    url: &str,
    renewed: &mut Option<Instant>,
) -> crate::store::Result<()> {
    loop {
        let due = store.due_webhooks(crate::domain::time::now_unix_ms(), Some(url), BATCH)?;
        if due.is_empty() {
            return Ok(());
        }
        let mut delivered_any = false;
        // A receiver that just failed is not tried again before its backoff ends: its other
        // waiting events wait as long (their attempt count unchanged), so a black-holed
        // receiver costs one timeout per backoff step, not one per event, and never holds
        // the other receivers' events back.
        let mut failed: Vec<(String, i64)> = Vec::new();
        for entry in due {
            if webhooks.nudge.stopped() || !hold_lease(webhooks, store, renewed) {
                return Ok(());
            }
            if let Some((_, until)) = failed.iter().find(|(url, _)| *url == entry.url) {
                store.webhook_attempted(entry.seq, Some((entry.attempts, *until)))?;
                continue;
            }
            match attempt(webhooks, store, &entry)? {
                Attempt::Delivered => delivered_any = true,
                Attempt::Failed { next_attempt_ms } => {
                    failed.push((entry.url.clone(), next_attempt_ms));
                }
                Attempt::Dropped => {}
            }
        }
        if !delivered_any {
            // Every one failed: wait for their backoff rather than spin.
            return Ok(());
        }
    }
}

/// What became of one entry.
enum Attempt {
    Delivered,
    /// Tried and refused or unreachable; tried again then.
    Failed {
        next_attempt_ms: i64,
    },
    /// Removed undelivered: given up, or its receiver is no longer configured.
    Dropped,
}

/// One attempt at one entry.
fn attempt(
    webhooks: &Webhooks,
    store: &dyn Store,
    entry: &OutboxEntry,
) -> crate::store::Result<Attempt> {
    let figures = &webhooks.figures;
    let now_ms = crate::domain::time::now_unix_ms();
    let receiver = webhooks
        .settings
        .receivers
        .iter()
        .find(|r| r.raw == entry.url);
    let Some(receiver) = receiver else {
        // Queued for a receiver no longer configured (on this node).
        log::warn!(
            "webhook event {} was queued for a receiver that is not configured now; dropped",
            entry.event_id
        );
        figures.dropped.fetch_add(1, Ordering::Relaxed);
        store.webhook_attempted(entry.seq, None)?;
        return Ok(Attempt::Dropped);
    };
    if now_ms - entry.queued_ms > webhook::GIVE_UP_AFTER_MS {
        log::error!(
            "webhook event {} to {} undelivered after {} attempts in 3 days; dropped",
            entry.event_id,
            receiver.shown(),
            entry.attempts
        );
        figures.dropped.fetch_add(1, Ordering::Relaxed);
        store.webhook_attempted(entry.seq, None)?;
        return Ok(Attempt::Dropped);
    }
    let t = crate::domain::time::now_unix();
    let signature = webhook::signature(&webhooks.settings.secret, t, entry.body.as_bytes());
    let event_type = serde_json::from_str::<serde_json::Value>(&entry.body)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let headers = [
        ("PA-Event-Id", entry.event_id.as_str()),
        ("PA-Event-Type", event_type.as_str()),
        ("PA-Signature", signature.as_str()),
    ];
    match receiver.post(webhooks.tls.as_ref(), &headers, entry.body.as_bytes()) {
        Ok(_) => {
            store.webhook_attempted(entry.seq, None)?;
            figures.delivered.fetch_add(1, Ordering::Relaxed);
            figures.last_delivered_unix.store(t, Ordering::Relaxed);
            Ok(Attempt::Delivered)
        }
        Err(why) => {
            let attempts = entry.attempts.saturating_add(1);
            let wait = webhook::retry_after_ms(attempts);
            log::warn!(
                "webhook event {} to {}: {why}; attempt {attempts}, next in {} s",
                entry.event_id,
                receiver.shown(),
                wait / 1000
            );
            figures.failed_attempts.fetch_add(1, Ordering::Relaxed);
            let next_attempt_ms = now_ms + wait;
            store.webhook_attempted(entry.seq, Some((attempts, next_attempt_ms)))?;
            Ok(Attempt::Failed { next_attempt_ms })
        }
    }
}
