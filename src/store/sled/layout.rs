//! The on-disk layout of a pa-auth data dir, in one place: every tree name, meta key, file
//! name and sentinel the store reads or writes. These are the format: changing one of them
//! is a schema change (bump [`SCHEMA_VERSION`] and teach `schema_upgrade` the old one).
//!
//! # Files in the data dir (0700; files 0600)
//!
//! - `pa-auth.lock` ([`LOCK_FILE`]): exclusively locked by the process that holds the
//!   store; holds its pid.
//! - `pa-auth.initialized` ([`INITIALIZED_MARKER`]): written once a store was created, so
//!   a missing or emptied `db/` later is refused instead of silently starting empty.
//! - `pa-auth.state` ([`STATE_FILE`], written through `pa-auth.state.tmp`): JSON
//!   `{"generation": u64, "dbLen": u64}`, the store's generation and the length of
//!   `db/db` after the last durable change; start-up refuses a store older or shorter.
//! - `db/` ([`DB_DIR`]): the sled directory; `db/db` ([`SLED_DATA_FILE`]) is sled's data
//!   file, whose length `pa-auth.state` records. A `db/*.generating` file
//!   ([`SLED_PARTIAL_SNAPSHOT_SUFFIX`]) is a sled snapshot an interrupted run left.
//! - `db.upgrade`, `db.schema1` ([`UPGRADE_SUFFIX`], [`RETIRED_SUFFIX`]): only while a
//!   schema upgrade runs (the new copy, and the old one between the two renames).
//! - `index.snapshot` ([`INDEX_SNAPSHOT_FILE`], written through `index.snapshot.tmp`):
//!   the in-memory index and creation order saved at a clean shutdown, read and removed
//!   at the next open; its format is described in `index_snapshot`.
//!
//! # Trees in sled (schema 5)
//!
//! Integers are big-endian; ids are the token's 16 bytes; times are unix seconds unless
//! marked µs.
//!
//! - `token_records` ([`RECORDS_TREE`]): id → record, in one of three versions, all read:
//!   - version `4` (written since schema 5 for a token with restrictions): version 3's
//!     header and three lengths ‖ access (u8: 0 full, 1 read) ‖ prefix count (u8, ≤ 100) ‖
//!     name ‖ owner ‖ description ‖ count × allowed prefix (18 bytes: the 16 address bytes,
//!     IPv4 as IPv4-mapped, ‖ length in IPv6 terms ‖ 4 or 6);
//!   - version `3` (written since schema 3): `3` (1 byte) ‖ blake3(secret) (32) ‖ created
//!     µs (i64) ‖ expires (i64, [`NEVER`] = never) ‖ name length (u16) ‖ owner length
//!     (u16, 0 = none) ‖ description length (u16, 0 = none) ‖ name ‖ owner ‖ description
//!     (UTF-8);
//!   - version `2` (every record schema 2 wrote): `2` ‖ blake3(secret) ‖ created µs ‖
//!     expires ‖ name (UTF-8, the rest of the value): a token without owner or description.
//!
//!   Encoded and decoded in `token_records`.
//! - `token_names` ([`TOKEN_NAMES_TREE`]): the folded (lower-cased) name → id; names are
//!   unique ignoring case.
//! - `last_used` ([`LAST_USED_TREE`]): id → last-used time (i64), written by the flusher
//!   and by restore, never moved backwards.
//! - `admins` ([`ADMINS_TREE`]): username (UTF-8) → `AdminAccount` as camelCase JSON.
//! - `meta` ([`META_TREE`]): [`SCHEMA_VERSION_KEY`] → u32; [`TOKEN_COUNT_KEY`] → u64;
//!   [`GENERATION_KEY`] → u64, bumped by every durable token or admin change;
//!   [`NEWEST_CREATED_KEY`] → i64 µs, creation time of the newest token ever created.
//! - `audit` and `audit_failures` ([`AUDIT_LIFECYCLE_TREE`], [`AUDIT_FAILURE_TREE`]):
//!   µs since the epoch (i64, clamped at 0) ‖ a store-wide sled id (u64) → `AuditEvent`
//!   as JSON. Which tree an event goes to is described in `audit_log`.
//! - `previous_secrets` ([`PREVIOUS_SECRETS_TREE`]): id → the previous secret of a token in
//!   a rotation's overlap (only those tokens); encoded in `previous_secrets`.
//! - `webhook_outbox` ([`WEBHOOK_OUTBOX_TREE`]): webhook events waiting for delivery, with
//!   [`WEBHOOK_SCAN_MARK_KEY`] in `meta`; see `webhook_outbox`. Added without a schema
//!   bump: a release that does not know it leaves it alone, and a newer one reads it as is.
//! - `token_usage` ([`USAGE_TREE`]): id → the token's usage (requests per day for 90 days,
//!   its last ten client addresses), encoded by `domain::usage` (at most 1,493 bytes); see
//!   `token_usage`. Added without a schema bump, like the outbox: an older release ignores
//!   it (a token it deletes leaves its usage behind, never shown: nothing lists usage
//!   without its token, and ids are never reused).
//!
//! # Schema 4 (upgraded in place)
//!
//! As schema 5, without version `4` records. Schema 5 added a token's restrictions (access,
//! allowed networks) as that new record version, written only for a restricted token; the
//! upgrade only sets [`SCHEMA_VERSION_KEY`] to 5 (instant at any size), so that an older
//! release refuses the store by its version instead of meeting a record it cannot read.
//!
//! # Schema 3 (upgraded in place)
//!
//! As schema 4, without `previous_secrets`. Schema 4 added that tree only; the upgrade sets
//! [`SCHEMA_VERSION_KEY`] to 4 (instant at any size) so that an older release, which would
//! delete a token and leave its previous secret behind, refuses the store by its version.
//!
//! # Schema 2 (upgraded in place)
//!
//! As schema 3, with every record in version `2`. Schema 3 added the owner and description
//! as a new record version beside the old one rather than rewriting the records: the
//! upgrade only sets [`SCHEMA_VERSION_KEY`] to 3 (instant at any size), so that an older
//! release refuses the store by its version instead of meeting a record it cannot read.
//! A record is rewritten in version 3 when its token is next edited.
//!
//! # Schema 1 (read only by the upgrade)
//!
//! `tokens` ([`SCHEMA_1_RECORDS_TREE`]): blake3(secret) → version `1` ‖ id (16) ‖ created
//! µs (i64) ‖ expires (i64, [`NEVER`] = never) ‖ name; `token_ids` (id → hash) and
//! `token_order` (created µs ‖ id → hash), dropped by the upgrade. The other trees and
//! meta keys are as in schema 2, without [`NEWEST_CREATED_KEY`]. Upgraded by a rewrite
//! straight to the current schema (`schema_upgrade`).

/// Layout version of the trees; bumped on any incompatible change, and an older store
/// is upgraded at open (`schema_upgrade`).
pub const SCHEMA_VERSION: u32 = 5;

// Files in the data dir.
pub const LOCK_FILE: &str = "pa-auth.lock";
/// Written once a store was created here: its absence later means "never initialized", so
/// a missing or emptied `db/` is refused instead of silently starting an empty store.
pub(super) const INITIALIZED_MARKER: &str = "pa-auth.initialized";
pub(super) const STATE_FILE: &str = "pa-auth.state";
pub(super) const DB_DIR: &str = "db";
/// sled's data file inside [`DB_DIR`].
pub(super) const SLED_DATA_FILE: &str = "db";
/// Ends the name of a sled snapshot file left half-written in [`DB_DIR`].
pub(super) const SLED_PARTIAL_SNAPSHOT_SUFFIX: &str = ".generating";
/// `db.upgrade`: the schema upgrade's new copy, beside `db`.
pub(super) const UPGRADE_SUFFIX: &str = ".upgrade";
/// `db.schema1`: the old store between the upgrade's two renames.
pub(super) const RETIRED_SUFFIX: &str = ".schema1";
pub(super) const INDEX_SNAPSHOT_FILE: &str = "index.snapshot";
/// Appended to a file's name for the copy written before the rename into place.
pub(super) const TMP_SUFFIX: &str = ".tmp";

// Trees.
pub(super) const RECORDS_TREE: &str = "token_records";
pub(super) const TOKEN_NAMES_TREE: &str = "token_names";
pub(super) const LAST_USED_TREE: &str = "last_used";
pub(super) const ADMINS_TREE: &str = "admins";
pub(super) const META_TREE: &str = "meta";
/// The lifecycle events (the only audit tree before the split, so older stores keep every
/// event they had here, failures included, until they age out).
pub(super) const AUDIT_LIFECYCLE_TREE: &str = "audit";
/// The audit events anyone can cause.
pub(super) const AUDIT_FAILURE_TREE: &str = "audit_failures";
/// Tokens in a rotation's overlap: id → their previous secret (schema 4).
pub(super) const PREVIOUS_SECRETS_TREE: &str = "previous_secrets";
/// Webhook events waiting for delivery: sled id → entry (see `webhook_outbox`). Not part of
/// the schema version: an older release leaves the tree alone.
pub(super) const WEBHOOK_OUTBOX_TREE: &str = "webhook_outbox";
/// id → usage (see `token_usage`). Not part of the schema version, like the outbox.
pub(super) const USAGE_TREE: &str = "token_usage";
/// Schema 1's record tree: blake3(secret) → record.
pub(super) const SCHEMA_1_RECORDS_TREE: &str = "tokens";
/// Trees only schema 1 had, rebuilt into [`RECORDS_TREE`] or dropped by the upgrade.
pub(super) const SCHEMA_1_ONLY_TREES: [&str; 3] =
    [SCHEMA_1_RECORDS_TREE, "token_ids", "token_order"];

// Keys in the meta tree.
pub(super) const SCHEMA_VERSION_KEY: &str = "schema_version";
pub(super) const TOKEN_COUNT_KEY: &str = "token_count";
pub(super) const GENERATION_KEY: &str = "generation";
/// Creation time (µs) of the newest token ever created, so creation order stays strictly
/// increasing across restarts without a scan.
pub(super) const NEWEST_CREATED_KEY: &str = "newest_created_micros";
/// Where the last webhook lifecycle scan ended (i64 unix seconds).
pub(super) const WEBHOOK_SCAN_MARK_KEY: &str = "webhook_scan_mark";

/// Stored expiry meaning "never expires" (records of both schemas, the index snapshot,
/// and the in-memory index).
pub(super) const NEVER: i64 = i64::MIN;

#[cfg(test)]
mod tests {
    use super::*;

    /// These names are the on-disk format: this fails if one is changed by accident.
    #[test]
    fn the_layout_names_are_what_every_released_store_holds() {
        // 3: owner and description (record version 3; schema 2 upgraded in place).
        // 4: previous secrets of a rotation (a new tree; schemas 2 and 3 upgraded in place).
        assert_eq!(SCHEMA_VERSION, 5);
        assert_eq!(PREVIOUS_SECRETS_TREE, "previous_secrets");
        assert_eq!(
            [
                LOCK_FILE,
                INITIALIZED_MARKER,
                STATE_FILE,
                DB_DIR,
                SLED_DATA_FILE
            ],
            [
                "pa-auth.lock",
                "pa-auth.initialized",
                "pa-auth.state",
                "db",
                "db"
            ]
        );
        assert_eq!(
            [
                UPGRADE_SUFFIX,
                RETIRED_SUFFIX,
                INDEX_SNAPSHOT_FILE,
                TMP_SUFFIX
            ],
            [".upgrade", ".schema1", "index.snapshot", ".tmp"]
        );
        assert_eq!(
            [
                RECORDS_TREE,
                TOKEN_NAMES_TREE,
                LAST_USED_TREE,
                ADMINS_TREE,
                META_TREE,
                AUDIT_LIFECYCLE_TREE,
                AUDIT_FAILURE_TREE,
            ],
            [
                "token_records",
                "token_names",
                "last_used",
                "admins",
                "meta",
                "audit",
                "audit_failures",
            ]
        );
        assert_eq!(SCHEMA_1_ONLY_TREES, ["tokens", "token_ids", "token_order"]);
        assert_eq!(
            [
                SCHEMA_VERSION_KEY,
                TOKEN_COUNT_KEY,
                GENERATION_KEY,
                NEWEST_CREATED_KEY
            ],
            [
                "schema_version",
                "token_count",
                "generation",
                "newest_created_micros"
            ]
        );
        assert_eq!(NEVER, i64::MIN);
    }
}
