//! `cargo bench --bench generate_tokens -- DATA_DIR COUNT [SECRETS_FILE]`: fills a data dir
//! with COUNT tokens quickly (offline, batched) for the scale and HTTP benchmarks, writing
//! the first 100,000 secrets to SECRETS_FILE (one per line). The data dir must not be in use.

// A benchmark that cannot set up should stop loudly, like a test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support.rs"]
mod support;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (Some(dir), Some(count)) = (
        args.first(),
        args.get(1).and_then(|c| c.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: cargo bench --bench generate_tokens -- DATA_DIR COUNT [SECRETS_FILE]");
        std::process::exit(2);
    };
    let started = std::time::Instant::now();
    let (_store, secrets) = support::generate(std::path::Path::new(dir), count, 100_000);
    if let Some(file) = args.get(2) {
        std::fs::write(file, secrets.join("\n") + "\n").expect("write secrets");
    }
    eprintln!(
        "generated {count} tokens in {dir} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
