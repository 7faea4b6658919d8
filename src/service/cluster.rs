//! Cluster mode (several nodes on one PostgreSQL store): the follower thread that keeps this
//! node in step with the other nodes' changes, and what this node knows of its own
//! freshness. A node that has not confirmed the store's latest revision for
//! `--max-staleness` refuses to verify (503): it might still accept a token another node has
//! deleted. It recovers by itself once it syncs again. With the embedded store there are no
//! other nodes: always fresh, and no thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::store::{Store, Synced};

/// How long one sync waits for word of a change before it reads the revision anyway: the
/// poll that guarantees no change is missed while NOTIFY is lost.
const POLL: Duration = Duration::from_millis(250);

/// Upper bounds (ms) of the propagation histogram's buckets (and +Inf).
pub const PROPAGATION_BOUNDS_MS: [u32; 10] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

/// Times from a change's commit to its application on this node, as a histogram.
#[derive(Debug, Default)]
struct PropagationHistogram {
    /// Per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; PROPAGATION_BOUNDS_MS.len() + 1],
    sum_ms: AtomicU64,
}

/// The propagation histogram as /metrics shows it.
#[derive(Debug, Clone, Copy)]
pub struct Propagation {
    /// Cumulative counts per bound of [`PROPAGATION_BOUNDS_MS`], then the total (+Inf).
    pub cumulative: [u64; PROPAGATION_BOUNDS_MS.len() + 1],
    pub sum: Duration,
}

impl PropagationHistogram {
    fn record(&self, ms: u32) {
        let bucket = PROPAGATION_BOUNDS_MS
            .iter()
            .position(|&bound| ms <= bound)
            .unwrap_or(PROPAGATION_BOUNDS_MS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(u64::from(ms), Ordering::Relaxed);
    }

    fn snapshot(&self) -> Propagation {
        let mut cumulative = [0; PROPAGATION_BOUNDS_MS.len() + 1];
        let mut total = 0;
        for (out, bucket) in cumulative.iter_mut().zip(&self.buckets) {
            total += bucket.load(Ordering::Relaxed);
            *out = total;
        }
        Propagation {
            cumulative,
            sum: Duration::from_millis(self.sum_ms.load(Ordering::Relaxed)),
        }
    }
}

/// How often a node looks whether the initial admin password it holds was changed elsewhere.
const TIDY_EVERY: Duration = Duration::from_secs(5);

/// The node that made the first admin keeps its generated password in a file until that
/// password is changed; changed through another node, the file here would outlive it. The
/// password no longer works anywhere, but a file of it should not stay behind.
fn remove_stale_initial_password(store: &dyn Store) {
    let path = store
        .data_dir()
        .join(super::admins::passwords::INITIAL_PASSWORD_FILE);
    if !path.exists() {
        return;
    }
    if let Ok(Some(account)) = store.admin("admin") {
        if !account.initial_password && std::fs::remove_file(&path).is_ok() {
            log::info!(
                "the initial admin password was changed on another node; removed {}",
                path.display()
            );
        }
    }
}

/// This node's view of its own freshness, for the web layer and /metrics.
#[derive(Debug)]
pub struct Freshness {
    started: Instant,
    /// Milliseconds after `started` of the last successful sync.
    synced_at_ms: AtomicU64,
    applied: AtomicU64,
    errors: AtomicU64,
    max_staleness: Duration,
    /// `--serve-stale`: verify from this node's copy even when stale.
    serve_stale: AtomicBool,
    propagation: PropagationHistogram,
}

/// Figures for /metrics.
#[derive(Debug, Clone, Copy)]
pub struct ClusterStatus {
    pub applied_revision: u64,
    pub staleness: Duration,
    pub sync_errors: u64,
    pub propagation: Propagation,
}

impl Freshness {
    pub(super) fn new(max_staleness: Duration) -> Freshness {
        Freshness {
            started: Instant::now(),
            synced_at_ms: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            max_staleness,
            serve_stale: AtomicBool::new(false),
            propagation: PropagationHistogram::default(),
        }
    }

    /// A sync confirmed `synced.revision` at `synced.confirmed_at` (never moves back).
    pub(super) fn synced(&self, synced: Synced) {
        let at = synced.confirmed_at.saturating_duration_since(self.started);
        let ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        self.applied.store(synced.revision, Ordering::Relaxed);
        self.synced_at_ms.fetch_max(ms, Ordering::Relaxed);
        for &ms in &synced.propagation_ms {
            self.propagation.record(ms);
        }
    }

    /// When the last successful sync read the store's revision.
    fn last_confirmed(&self) -> Instant {
        self.started + Duration::from_millis(self.synced_at_ms.load(Ordering::Relaxed))
    }

    /// Time since the last successful sync.
    pub fn staleness(&self) -> Duration {
        let at = Duration::from_millis(self.synced_at_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(at)
    }

    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    pub fn is_fresh(&self) -> bool {
        self.serve_stale.load(Ordering::Relaxed) || self.staleness() <= self.max_staleness
    }

    pub(super) fn serve_stale(&self) {
        self.serve_stale.store(true, Ordering::Relaxed);
    }

    pub fn status(&self) -> ClusterStatus {
        ClusterStatus {
            applied_revision: self.applied.load(Ordering::Relaxed),
            staleness: self.staleness(),
            sync_errors: self.errors.load(Ordering::Relaxed),
            propagation: self.propagation.snapshot(),
        }
    }
}

/// The follower thread; stopped and joined on drop.
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Follower {
    pub(super) fn start(
        store: Arc<dyn Store>,
        freshness: Arc<Freshness>,
    ) -> std::io::Result<Follower> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("cluster-follower".into())
            .spawn(move || {
                let mut last_warned: Option<Instant> = None;
                let mut was_fresh = true;
                let mut last_tidy = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    if last_tidy.elapsed() >= TIDY_EVERY {
                        last_tidy = Instant::now();
                        remove_stale_initial_password(&*store);
                    }
                    let fresh = freshness.is_fresh();
                    if fresh != was_fresh {
                        if fresh {
                            log::info!(
                                "caught up with the database (revision {}): verifying tokens again",
                                freshness.applied.load(Ordering::Relaxed)
                            );
                        } else {
                            log::warn!(
                                "no confirmation of the latest token changes for over {} s: \
                                 answering token checks and /healthz with 503 until this node \
                                 catches up",
                                freshness.max_staleness.as_secs()
                            );
                        }
                        was_fresh = fresh;
                    }
                    match store.sync(POLL) {
                        Ok(synced) => {
                            // Stale and caught up again between two looks of this loop (a
                            // paused or starved process): still said once.
                            let gap = synced
                                .confirmed_at
                                .saturating_duration_since(freshness.last_confirmed());
                            if was_fresh && gap > freshness.max_staleness {
                                log::warn!(
                                    "went {:.1} s without confirming the latest token changes (a \
                                     paused or starved process?): token checks were answered \
                                     503 meanwhile; caught up now",
                                    gap.as_secs_f64()
                                );
                            }
                            freshness.synced(synced);
                        }
                        Err(e) => {
                            freshness.errors.fetch_add(1, Ordering::Relaxed);
                            if last_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                                log::warn!(
                                    "cannot confirm the database's latest change ({e}); \
                                     forward-auth answers 503 once this lasts {} s",
                                    freshness.max_staleness.as_secs()
                                );
                                last_warned = Some(Instant::now());
                            }
                            std::thread::sleep(POLL);
                        }
                    }
                }
            })?;
        Ok(Follower {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
