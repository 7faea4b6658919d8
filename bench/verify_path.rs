//! `cargo bench --bench verify_path`: the authentication hot path in-process (parse the
//! Authorization value → format check → blake3 → sled lookup → expiry → last-used record),
//! with 1,000 and with 1,000,000 tokens stored, rotating over 1,000 of them (cache-warm) and,
//! with 1M stored, over 100,000 (most lookups miss the CPU caches, as under the flush rows of
//! compare_nginx.sh). Prints the median and p99 of per-call times measured over batches, and
//! the 1M/1k ratio of the 1,000-token rows. Each row twice: the verify path alone, and
//! `+usage` with the usage record `Service::authenticate` adds (day count and client address,
//! issue 19). No thresholds: it reports.

// A benchmark that cannot set up should stop loudly, like a test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

use std::time::Instant;

use pa_auth::service::auth::last_used::LastUsedTracker;
use pa_auth::service::auth::usage::UsageTracker;
use pa_auth::service::auth::{verify_bearer, AuthCounters, RequestFacts};

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 1_000_000]
    } else {
        sizes
    };
    // `--cidrs=N` (issue 19): every token has N allowed prefixes and the client matches only
    // the last one, the linear scan's worst case (N at most 100).
    let cidrs: usize = std::env::args()
        .find_map(|a| a.strip_prefix("--cidrs=").and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let restrictions = pa_auth::domain::restrictions::Restrictions {
        access: pa_auth::domain::restrictions::Access::Full,
        networks: if cidrs == 0 {
            Default::default()
        } else {
            let mut list: Vec<String> = (1..cidrs).map(|i| format!("10.{i}.0.0/16")).collect();
            list.push("127.0.0.0/8".into());
            pa_auth::domain::restrictions::validate_allowed_cidrs(&list).expect("prefixes")
        },
    };
    if cidrs > 0 {
        println!("every token has {cidrs} allowed prefixes; the client matches the last");
    }
    let mut medians = Vec::new();
    for n in sizes {
        let dir =
            std::env::temp_dir().join(format!("pa-auth-bench-verify-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        let keep = n.min(100_000);
        let (store, secrets) = if cidrs == 0 {
            support::generate(&dir, n, keep)
        } else {
            support::generate_restricted(&dir, n, keep, &restrictions)
        };
        let generated = started.elapsed();
        let headers: Vec<String> = secrets.iter().map(|s| format!("Bearer {s}")).collect();
        let tracker = LastUsedTracker::default();
        let usage = UsageTracker::default();
        let peer = std::net::IpAddr::from([192, 0, 2, 7]);
        let counters = AuthCounters::default();
        let now = pa_auth::domain::time::now_unix();
        // What forward-auth passes since issue 19 (the client address and the original
        // method); the generated tokens have no restrictions, as most tokens.
        let facts = RequestFacts {
            client: std::net::IpAddr::from([127, 0, 0, 1]),
            client_known: true,
            method: Some("GET"),
        };
        let mut rotations = vec![1_000.min(keep)];
        if keep > 1_000 {
            rotations.push(keep);
        }
        for distinct in rotations {
            // Shuffled order (a stride coprime to the count), so neighbours in memory are
            // not neighbours in time.
            let headers = &headers[..distinct];
            // Warm the cache the way a running server is warm.
            for h in headers {
                verify_bearer(
                    &store,
                    &tracker,
                    &counters,
                    None,
                    &[h.as_bytes()],
                    &facts,
                    now,
                )
                .expect("valid");
            }
            const BATCH: usize = 10_000;
            for with_usage in [false, true] {
                let mut per_call_ns: Vec<f64> = (0..200)
                    .map(|round| {
                        let t = Instant::now();
                        for i in 0..BATCH {
                            let h = &headers[((round * BATCH + i) * 7919) % distinct];
                            let ok = verify_bearer(
                                &store,
                                &tracker,
                                &counters,
                                None,
                                &[h.as_bytes()],
                                &facts,
                                now,
                            );
                            if with_usage {
                                if let Ok(v) = &ok {
                                    usage.record(v.token.id, peer, now);
                                }
                            }
                            std::hint::black_box(ok.is_ok());
                        }
                        t.elapsed().as_nanos() as f64 / BATCH as f64
                    })
                    .collect();
                per_call_ns.sort_by(f64::total_cmp);
                let median = per_call_ns[per_call_ns.len() / 2];
                let p99 = per_call_ns[per_call_ns.len() * 99 / 100];
                let label = if with_usage {
                    "verify_path+usage"
                } else {
                    "verify_path"
                };
                println!(
                    "{label:<17} tokens={n:>9} rotating={distinct:>7} median={median:>7.0} ns/call  p99(batch)={p99:>7.0} ns/call  (generated in {:.1} s)",
                    generated.as_secs_f64()
                );
                if distinct == 1_000.min(keep) && !with_usage {
                    medians.push((n, median));
                }
            }
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let [(a, first), .., (b, last)] = medians[..] {
        println!("ratio tokens={b}/tokens={a}: {:.2}x", last / first);
    }
}
