//! Shared by the benchmark programs: generating many tokens quickly, offline.

use std::path::Path;

use pa_auth::domain::token::{PlaintextToken, TokenId};
use pa_auth::store::sled::{SledStore, StoreOptions};
use pa_auth::store::TokenRecord;

/// Opens (creating) a store and fills it with `count` tokens named `bench-N`, in batches.
/// Returns the store and the secrets of the first `keep` tokens.
pub fn generate(dir: &Path, count: usize, keep: usize) -> (SledStore, Vec<String>) {
    generate_restricted(dir, count, keep, &Default::default())
}

/// [`generate`] with every token given `restrictions` (issue 19's worst cases). Only
/// verify_path uses it; each bench compiles this file on its own.
#[allow(dead_code)]
pub fn generate_restricted(
    dir: &Path,
    count: usize,
    keep: usize,
    restrictions: &pa_auth::domain::restrictions::Restrictions,
) -> (SledStore, Vec<String>) {
    // Indexed, as the server opens it.
    let options = StoreOptions {
        index_tokens: true,
        ..StoreOptions::default()
    };
    let store = SledStore::open(dir, &options).expect("open store");
    let mut kept = Vec::with_capacity(keep);
    let now_micros = pa_auth::domain::time::now_unix() * 1_000_000;
    let mut done = 0;
    while done < count {
        let batch_len = (count - done).min(50_000);
        let batch: Vec<_> = (done..done + batch_len)
            .map(|i| {
                let secret = PlaintextToken::generate();
                if kept.len() < keep {
                    kept.push(secret.expose_secret().to_string());
                }
                let record = TokenRecord {
                    id: TokenId::generate(),
                    name: format!("bench-{i:07}"),
                    created_micros: now_micros + i as i64,
                    expires_at: None,
                    owner: None,
                    description: None,
                    restrictions: restrictions.clone(),
                };
                (secret.hash(), record)
            })
            .collect();
        store.import_tokens(&batch).expect("import");
        done += batch_len;
    }
    (store, kept)
}
