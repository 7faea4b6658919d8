//! Webhooks (`--webhook-url`, `--webhook-secret`): token lifecycle events sent to the site's
//! own receivers, for sites with no e-mail and no internet. Events enter a durable outbox in
//! the store the moment they happen — `token.created|deleted|rotated` as their audit event
//! is written, an `admin.login_failed` burst when one is seen — or when the periodic scan
//! finds them due (`token.expiring` 30, 7 and 1 days before expiry, `token.expired`,
//! `token.unused`). One thread per node ([`sender`]) delivers them, and only on the node that
//! holds the store's sender lease: at least once, each with its stable id, retried with
//! backoff, surviving restarts and `kill -9` (an entry leaves the outbox only after a 2xx).
//!
//! Bounds: the outbox holds at most [`MAX_OUTBOX`] entries (past it new events are dropped
//! and counted), and an event undelivered for 3 days is dropped and counted; both are in
//! /metrics and the log, so an alert rule sees a receiver that is gone.

pub mod receiver;
mod sender;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::audit::{AuditEvent, AuditKind};
use crate::domain::webhook;
use crate::store::{OutboxEntry, Store};
pub use receiver::ReceiverUrl;
pub use sender::WebhookSender;

/// The most entries the outbox holds (events × receivers).
pub const MAX_OUTBOX: u64 = 100_000;
/// Failed admin logins within [`BURST_WINDOW_SECS`] that make an `admin.login_failed` event.
pub const BURST_THRESHOLD: u64 = 5;
pub const BURST_WINDOW_SECS: u64 = 300;
/// Most `token.denied_network` events queued per [`BURST_WINDOW_SECS`], all tokens
/// together: each reports one flush interval's aggregated `auth.denied_network` audit event
/// (a token, an address, a count), so a leaked token hammered from outside makes a few
/// events, not one per request; past the limit they are counted in the log only (the audit
/// log still has every count).
pub const MAX_DENIED_NETWORK_EVENTS: u64 = 20;
/// The shortest `--webhook-secret` accepted, in bytes.
pub const MIN_SECRET: usize = 16;

/// What `serve` was told about webhooks.
#[derive(Clone)]
pub struct WebhookSettings {
    pub receivers: Vec<ReceiverUrl>,
    /// The HMAC key of `PA-Signature`; never logged.
    pub secret: Vec<u8>,
    /// PEM file of the authorities an https receiver's certificate must chain to (default:
    /// the system's).
    pub ca: Option<PathBuf>,
    /// `token.unused` after this many days without use (`None`: never).
    pub unused_after_days: Option<u32>,
    /// How often the lifecycle scan runs.
    pub scan_interval: Duration,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("receivers", &self.receivers)
            .field("secret", &"<redacted>")
            .field("ca", &self.ca)
            .field("unused_after_days", &self.unused_after_days)
            .field("scan_interval", &self.scan_interval)
            .finish()
    }
}

impl WebhookSettings {
    /// The TLS configuration for https receivers (`None` if every receiver is http).
    pub fn tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
        if !self.receivers.iter().any(ReceiverUrl::is_https) {
            return Ok(None);
        }
        let (ca, flag) = match &self.ca {
            Some(ca) => (ca.clone(), "--webhook-ca"),
            None => (
                PathBuf::from(crate::tls_client::SYSTEM_ROOTS),
                "the system's certificate authorities",
            ),
        };
        crate::tls_client::config_trusting(&ca, flag).map(|c| Some(Arc::new(c)))
    }
}

/// Delivery figures for /metrics.
#[derive(Debug, Default)]
pub struct WebhookFigures {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    /// Dropped: outbox full, or undelivered for 3 days.
    pub dropped: AtomicU64,
    /// Entries waiting, as last counted.
    pub pending: AtomicU64,
    /// Unix ms when the oldest waiting entry was queued (0: none).
    pub oldest_queued_ms: AtomicI64,
    /// Unix seconds of the last delivery (0: none yet).
    pub last_delivered_unix: AtomicI64,
    /// Whether this node holds the sender lease.
    pub sending: AtomicBool,
}

/// Failed admin logins counted in the current window.
#[derive(Debug, Default)]
struct Burst {
    window_start: i64,
    count: u64,
    reported: bool,
    addrs: Vec<String>,
}

impl Burst {
    /// Counts one failure at `now`; the burst to report when this one reaches the threshold.
    fn note(&mut self, now: i64, addr: Option<&str>) -> Option<(u64, Vec<String>)> {
        let window = i64::try_from(BURST_WINDOW_SECS).unwrap_or(i64::MAX);
        if self.count == 0 || now - self.window_start >= window {
            *self = Burst {
                window_start: now,
                ..Burst::default()
            };
        }
        self.count += 1;
        if let Some(addr) = addr {
            if self.addrs.len() < 10 && !self.addrs.iter().any(|a| a == addr) {
                self.addrs.push(addr.to_owned());
            }
        }
        if !self.reported && self.count >= BURST_THRESHOLD {
            self.reported = true;
            return Some((self.count, self.addrs.clone()));
        }
        None
    }
}

/// The service's side of webhooks: queues events and keeps the figures.
pub struct Webhooks {
    settings: WebhookSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    figures: Arc<WebhookFigures>,
    burst: Mutex<Burst>,
    /// `token.denied_network` events queued in the current window: (window start, count).
    denied_network: Mutex<(i64, u64)>,
    /// Wakes the sender when an event is queued.
    nudge: Arc<sender::Nudge>,
}

impl Webhooks {
    pub fn new(settings: WebhookSettings) -> Result<Webhooks, String> {
        let tls = settings.tls()?;
        Ok(Webhooks {
            settings,
            tls,
            figures: Arc::default(),
            burst: Mutex::default(),
            denied_network: Mutex::default(),
            nudge: Arc::default(),
        })
    }

    pub fn figures(&self) -> &WebhookFigures {
        &self.figures
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    /// An audit event was written: queues the webhook event it makes, if any (durably, before
    /// returning). A failure is logged: the change it reports is already made.
    pub fn on_audit(&self, store: &dyn Store, event: &AuditEvent, now: i64) {
        let Some(kind) = AuditKind::from_name(&event.event) else {
            return;
        };
        if webhook::is_webhook_audit_event(kind) {
            let id = webhook::audit_event_id(&event.id);
            self.enqueue(store, &id, &webhook::audit_body(event), None);
        } else if kind == AuditKind::AuthDeniedNetwork && event.token_id.is_some() {
            if self.take_denied_network_slot(now) {
                let id = webhook::audit_event_id(&event.id);
                self.enqueue(store, &id, &webhook::denied_network_body(event), None);
            }
        } else if kind == AuditKind::AdminLoginFailed {
            let burst = crate::sync::lock(&self.burst).note(now, event.remote_addr.as_deref());
            if let Some((count, addrs)) = burst {
                let id = webhook::audit_event_id(&event.id);
                let body = webhook::login_burst_body(&id, now, count, BURST_WINDOW_SECS, &addrs);
                self.enqueue(store, &id, &body, None);
            }
        }
    }

    /// Whether another `token.denied_network` event may be queued now (see
    /// [`MAX_DENIED_NETWORK_EVENTS`]).
    fn take_denied_network_slot(&self, now: i64) -> bool {
        let mut window = crate::sync::lock(&self.denied_network);
        if now - window.0 >= BURST_WINDOW_SECS as i64 {
            *window = (now, 0);
        }
        window.1 += 1;
        if window.1 == MAX_DENIED_NETWORK_EVENTS + 1 {
            log::warn!(
                "more than {MAX_DENIED_NETWORK_EVENTS} token.denied_network webhook events                  within {BURST_WINDOW_SECS} s: further ones are not sent until the window                  ends (the audit log keeps every auth.denied_network count)"
            );
        }
        window.1 <= MAX_DENIED_NETWORK_EVENTS
    }

    /// Queues one event for every receiver, unless the outbox is full.
    fn enqueue(
        &self,
        store: &dyn Store,
        id: &str,
        body: &str,
        scan: Option<crate::store::ScanMark>,
    ) {
        let now_ms = crate::domain::time::now_unix_ms();
        let entries = self.entries(id, body, now_ms);
        if !self.room_for(entries.len()) {
            return;
        }
        match store.enqueue_webhooks(&entries, scan) {
            Ok(_) => {
                self.figures
                    .pending
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
                self.nudge.wake();
            }
            Err(e) => log::error!("queueing webhook event {id} failed: {e}"),
        }
    }

    /// One outbox entry per receiver.
    fn entries(&self, id: &str, body: &str, now_ms: i64) -> Vec<OutboxEntry> {
        self.settings
            .receivers
            .iter()
            .map(|r| OutboxEntry {
                seq: 0,
                event_id: id.to_owned(),
                url: r.raw.clone(),
                body: body.to_owned(),
                attempts: 0,
                next_attempt_ms: now_ms,
                queued_ms: now_ms,
            })
            .collect()
    }

    /// Whether `n` more entries fit the outbox; if not, they are counted as dropped.
    fn room_for(&self, n: usize) -> bool {
        let pending = self.figures.pending.load(Ordering::Relaxed);
        if pending + n as u64 <= MAX_OUTBOX {
            return true;
        }
        self.figures.dropped.fetch_add(n as u64, Ordering::Relaxed);
        log::error!(
            "webhook outbox full ({pending} entries waiting, at most {MAX_OUTBOX}): {n} new \
             entr(ies) dropped; check that the receivers are reachable"
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_reported_once_per_window() {
        let mut b = Burst::default();
        for i in 0..4 {
            assert!(b.note(100 + i, Some("10.0.0.1")).is_none());
        }
        let (count, addrs) = b.note(104, Some("10.0.0.2")).unwrap();
        assert_eq!((count, addrs.len()), (5, 2));
        assert!(b.note(105, Some("10.0.0.1")).is_none());
        // A new window after five minutes.
        for i in 0..4 {
            assert!(b.note(400 + i, None).is_none());
        }
        assert!(b.note(404, None).is_some());
    }

    /// Issue 19: each aggregated `auth.denied_network` audit event becomes one
    /// `token.denied_network` webhook event, at most MAX_DENIED_NETWORK_EVENTS a window,
    /// whatever the flood; other denials and failures make none.
    #[test]
    fn denied_network_events_are_queued_and_capped_per_window() {
        let store = crate::store::test_support::TempStore::new();
        let hooks = Webhooks::new(WebhookSettings {
            receivers: vec![ReceiverUrl::parse("http://127.0.0.1:9/hook").unwrap()],
            secret: vec![7; 32],
            ca: None,
            unused_after_days: None,
            scan_interval: Duration::from_secs(60),
        })
        .unwrap();
        let event = |i: u32, kind: AuditKind| AuditEvent {
            id: format!("{i:032x}"),
            at: "2026-12-02T00:00:00Z".into(),
            event: kind.into(),
            token_id: Some("ee17b3d5-f0dc-4a2a-a3ef-12a7470f8ff0".into()),
            remote_addr: Some("192.0.2.1".into()),
            count: Some(3),
            ..Default::default()
        };
        hooks.on_audit(&*store, &event(0, AuditKind::AuthDeniedReadOnly), 1000);
        hooks.on_audit(&*store, &event(1, AuditKind::AuthFailed), 1000);
        for i in 2..200 {
            hooks.on_audit(&*store, &event(i, AuditKind::AuthDeniedNetwork), 1000);
        }
        let due = store.due_webhooks(i64::MAX, None, 1000).unwrap();
        assert_eq!(due.len() as u64, MAX_DENIED_NETWORK_EVENTS);
        let body: serde_json::Value = serde_json::from_str(&due[0].body).unwrap();
        assert_eq!(body["type"], "token.denied_network");
        assert_eq!(body["data"]["remoteAddr"], "192.0.2.1");
        assert_eq!(body["data"]["count"], 3);
        assert_eq!(
            body["data"]["token"]["id"],
            "ee17b3d5-f0dc-4a2a-a3ef-12a7470f8ff0"
        );
        // The next window has room again.
        hooks.on_audit(
            &*store,
            &event(500, AuditKind::AuthDeniedNetwork),
            1000 + 301,
        );
        let due = store.due_webhooks(i64::MAX, None, 1000).unwrap();
        assert_eq!(due.len() as u64, MAX_DENIED_NETWORK_EVENTS + 1);
    }
}
