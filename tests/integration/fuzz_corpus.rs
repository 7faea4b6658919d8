//! Replays every committed fuzz corpus file (and crash reproducer) through the same property
//! checks the cargo-fuzz targets run, so the normal test command covers them on stable.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "corpus file {} fails its property check",
            path.display()
        );
        n += 1;
    }
    assert!(n > 0, "empty corpus for {target}");
}

#[test]
fn request_head_corpus() {
    replay("request_head", pa_auth::fuzz_checks::check_request_head);
}

#[test]
fn bearer_header_corpus() {
    replay("bearer_header", pa_auth::fuzz_checks::check_bearer_header);
}

#[test]
fn token_format_corpus() {
    replay("token_format", pa_auth::fuzz_checks::check_token_format);
}

#[test]
fn admin_json_corpus() {
    replay("admin_json", pa_auth::fuzz_checks::check_admin_json);
}

#[test]
fn routing_corpus() {
    replay("routing", pa_auth::fuzz_checks::check_routing);
}

#[test]
fn forwarded_corpus() {
    replay("forwarded", pa_auth::fuzz_checks::check_forwarded);
}
