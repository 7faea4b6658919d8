//! The PostgreSQL schema, created and checked by the binary. Versioned like the embedded
//! store's layout: a database written by a newer release is refused, never touched.
//!
//! Tables (all prefixed `pa_auth_`, so the database may hold other things):
//! - `meta` (key → bigint): `schema_version`, and `revision`, bumped by every token or admin
//!   change in its own transaction (the row lock orders changes: gap-free and total).
//! - `tokens`: id (16 bytes), hash (blake3 of the secret, 32 bytes, unique), name, the folded
//!   name (unique: names are unique ignoring case), created µs (listing order), expiry
//!   (unix s, null = never), last used (unix s, written by the flusher, never backwards),
//!   owner (and its folded form, for the listing's filter) and description (null = none),
//!   a rotation's previous secret (its hash, end, and whether the new secret's first use
//!   ends it; null while there is none), and its restrictions (allowed networks, access;
//!   null = none).
//! - `changes`: revision → what changed (op `create`, `update`, `delete`, `rotate` (with the
//!   replaced current hash), `previous_end` or `admin`, token id and hash): the feed other
//!   nodes follow.
//! - `admins`: username → the account as JSON (an Argon2id hash, never a password).
//! - `sessions`: console sessions under the blake3 of their cookie (never the cookie), with
//!   their CSRF token and times, so a login on one node works on every node.
//! - `nodes`: each serving node's applied revision and when it last synced (what a delete
//!   waits on).
//! - `login_guesses`: admin guesses per client address (count, last, locked until; ms), so
//!   the login throttle holds across nodes; rows older than the throttle's memory are pruned.
//! - `audit`: 16-byte key (µs ‖ sequence `audit_seq`) → class (0 lifecycle, 1 failure) and
//!   the event as JSON; each class capped on its own.
//! - `webhook_outbox`: webhook events waiting for delivery, one row per event and receiver
//!   (unique together), with their body, attempts and next attempt; `meta` holds the
//!   lifecycle scan's mark (`webhook_scan_mark`).
//! - `webhook_sender`: one row, the node that scans and sends webhooks and until when (a
//!   lease on the database's clock).
//! - `usage_days` and `usage_addresses`: each token's requests per UTC day (90 kept) and its
//!   last ten client addresses (first and last seen, count), added to by every node's flush
//!   and removed with the token (see `token_usage`).

use postgres::Client;

use crate::store::error::{Error, Result};

/// Bumped on any incompatible change; an older schema is upgraded at open.
/// 1: the first cluster release. 2: `login_guesses` (created by the upgrade). 3: tokens'
/// `owner`, `owner_folded` and `description` (columns added by the upgrade, null for every
/// token that was there) and the `update` op in the feed. 4: tokens' previous secret of a
/// rotation (`previous_hash`, `previous_ends_at`, `previous_until_used`; null/false for every
/// token that was there) and the `rotate` and `previous_end` ops in the feed. 5: the webhook
/// outbox and sender lease (`webhook_outbox`, `webhook_sender`, created by the upgrade).
/// 6: token usage (`usage_days`, `usage_addresses`, created by the upgrade) and tokens'
/// restrictions (`allowed_cidrs`: canonical prefixes joined by `,`, null = anywhere;
/// `access`: null = full, `read`), columns added by the upgrade, null for every token that
/// was there.
pub const SCHEMA_VERSION: i64 = 6;

/// Serialises schema creation between nodes starting at once ("pa-auth0").
const SCHEMA_LOCK: i64 = 0x7061_2d61_7574_6830;

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS pa_auth_meta (key text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE IF NOT EXISTS pa_auth_tokens (
    id bytea PRIMARY KEY CHECK (length(id) = 16),
    hash bytea NOT NULL CHECK (length(hash) = 32),
    name text NOT NULL,
    name_folded text NOT NULL,
    created_micros bigint NOT NULL,
    expires_at bigint,
    last_used bigint,
    CONSTRAINT pa_auth_tokens_hash_key UNIQUE (hash),
    CONSTRAINT pa_auth_tokens_name_key UNIQUE (name_folded)
);
CREATE INDEX IF NOT EXISTS pa_auth_tokens_order ON pa_auth_tokens (created_micros DESC, id DESC);
ALTER TABLE pa_auth_tokens
    ADD COLUMN IF NOT EXISTS owner text,
    ADD COLUMN IF NOT EXISTS owner_folded text,
    ADD COLUMN IF NOT EXISTS description text;
ALTER TABLE pa_auth_tokens
    ADD COLUMN IF NOT EXISTS previous_hash bytea CHECK (length(previous_hash) = 32),
    ADD COLUMN IF NOT EXISTS previous_ends_at bigint,
    ADD COLUMN IF NOT EXISTS previous_until_used boolean NOT NULL DEFAULT false;
ALTER TABLE pa_auth_tokens
    ADD COLUMN IF NOT EXISTS allowed_cidrs text,
    ADD COLUMN IF NOT EXISTS access text CHECK (access = 'read');
-- Only tokens in a rotation's overlap: every node's maintenance round looks for ended ones.
CREATE INDEX IF NOT EXISTS pa_auth_tokens_previous
    ON pa_auth_tokens (previous_ends_at) WHERE previous_hash IS NOT NULL;
CREATE INDEX IF NOT EXISTS pa_auth_tokens_owner
    ON pa_auth_tokens (owner_folded, created_micros DESC, id DESC) WHERE owner_folded IS NOT NULL;
CREATE TABLE IF NOT EXISTS pa_auth_changes (
    revision bigint PRIMARY KEY,
    op text NOT NULL,
    id bytea,
    hash bytea,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pa_auth_admins (username text PRIMARY KEY, account text NOT NULL);
CREATE SEQUENCE IF NOT EXISTS pa_auth_audit_seq;
CREATE TABLE IF NOT EXISTS pa_auth_audit (
    key bytea PRIMARY KEY CHECK (length(key) = 16),
    class smallint NOT NULL,
    event text NOT NULL
);
CREATE INDEX IF NOT EXISTS pa_auth_audit_class ON pa_auth_audit (class, key);
CREATE TABLE IF NOT EXISTS pa_auth_sessions (
    key bytea PRIMARY KEY CHECK (length(key) = 32),
    username text NOT NULL,
    csrf_token text NOT NULL,
    created_ms bigint NOT NULL,
    last_seen_ms bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS pa_auth_nodes (
    node_id text PRIMARY KEY,
    applied bigint NOT NULL,
    seen_at timestamptz NOT NULL,
    stale_after_ms bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS pa_auth_login_guesses (
    addr text PRIMARY KEY,
    guesses integer NOT NULL,
    last_ms bigint NOT NULL,
    locked_until_ms bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS pa_auth_login_guesses_last ON pa_auth_login_guesses (last_ms);
CREATE TABLE IF NOT EXISTS pa_auth_webhook_outbox (
    seq bigserial PRIMARY KEY,
    event_id text NOT NULL,
    url text NOT NULL,
    body text NOT NULL,
    attempts integer NOT NULL,
    next_attempt_ms bigint NOT NULL,
    queued_ms bigint NOT NULL,
    CONSTRAINT pa_auth_webhook_outbox_event UNIQUE (event_id, url)
);
CREATE INDEX IF NOT EXISTS pa_auth_webhook_outbox_due ON pa_auth_webhook_outbox (next_attempt_ms);
CREATE TABLE IF NOT EXISTS pa_auth_webhook_sender (
    one boolean PRIMARY KEY CHECK (one),
    node_id text NOT NULL,
    until_ms bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS pa_auth_usage_days (
    token_id bytea NOT NULL REFERENCES pa_auth_tokens (id) ON DELETE CASCADE,
    day integer NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (token_id, day)
);
CREATE TABLE IF NOT EXISTS pa_auth_usage_addresses (
    token_id bytea NOT NULL REFERENCES pa_auth_tokens (id) ON DELETE CASCADE,
    addr text NOT NULL,
    first_seen bigint NOT NULL,
    last_seen bigint NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (token_id, addr)
);
";

/// Creates the schema on an empty database, or checks the version of an existing one.
/// `create`: false for a database that must already hold pa-auth data (a migration's
/// source): one without the schema is refused, and nothing is created in it.
pub(super) fn create_or_check(client: &mut Client, create: bool) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('pa_auth_meta') IS NOT NULL", &[])?
        .get(0);
    if exists {
        let version: Option<i64> = tx
            .query_opt(
                "SELECT value FROM pa_auth_meta WHERE key = 'schema_version'",
                &[],
            )?
            .map(|row| row.get(0));
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(v) if (1..SCHEMA_VERSION).contains(&v) => {
                // Every table and index is created `IF NOT EXISTS`: the upgrade adds what
                // the newer schema has and touches nothing that is there.
                tx.batch_execute(CREATE)?;
                tx.execute(
                    "UPDATE pa_auth_meta SET value = $1 WHERE key = 'schema_version'",
                    &[&SCHEMA_VERSION],
                )?;
                log::info!(
                    "upgraded the pa-auth schema in the database from {v} to {SCHEMA_VERSION}"
                );
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(Error::Config(format!(
                    "the database holds pa-auth schema {v}, newer than this release's \
                     {SCHEMA_VERSION}: use the pa-auth release that wrote it; nothing was changed"
                )))
            }
            other => {
                return Err(Error::Corrupt(format!(
                    "the database's pa-auth schema version is {other:?}, not {SCHEMA_VERSION}; \
                     nothing was changed"
                )))
            }
        }
    } else if !create {
        return Err(Error::Config(
            "the database holds no pa-auth data (no pa-auth schema): nothing was changed".into(),
        ));
    } else {
        tx.batch_execute(CREATE)?;
        tx.execute(
            "INSERT INTO pa_auth_meta (key, value) VALUES ('schema_version', $1), ('revision', 0)",
            &[&SCHEMA_VERSION],
        )?;
        log::info!("created the pa-auth schema {SCHEMA_VERSION} in the database");
    }
    tx.commit()?;
    Ok(())
}
