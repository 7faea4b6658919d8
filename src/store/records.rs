//! The values the [`super::Store`] trait speaks in: token records and pages, what the hot
//! path gets from a lookup, admin accounts, exported tokens, audit queries, last-used writes,
//! and the listing and audit cursors. Plain data, the same whichever store runs; how a store
//! encodes them is its own business.

use serde::{Deserialize, Serialize};

use crate::domain::restrictions::{Access, AllowedNetworks, Restrictions};
use crate::domain::text::Text;
use crate::domain::token::{TokenHash, TokenId};

/// created µs(8) ‖ id(16): a listing cursor.
pub const ORDER_KEY_LEN: usize = 24;

/// One last-used time to persist (see [`super::Store::write_last_used_chunk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastUsedWrite {
    pub id: TokenId,
    /// The token's secret hash, when the caller knows it: existence is then checked in the
    /// in-memory index (when serving) instead of in storage.
    pub hash: Option<TokenHash>,
    /// The last-used time to store, unix seconds.
    pub seen: i64,
    /// The time the store already holds for the token, when the caller knows it (what this
    /// process last wrote); `None`: read it from storage.
    pub flushed: Option<i64>,
}

/// An owned token record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub name: String,
    /// Creation time, µs since the epoch (orders the listing).
    pub created_micros: i64,
    /// First second at which the token stops working; `None` = never.
    pub expires_at: Option<i64>,
    /// Who the token is for (a team, an e-mail address): free text, validated by
    /// [`crate::domain::token_fields::validate_owner`].
    pub owner: Option<String>,
    /// What the token is for, validated by
    /// [`crate::domain::token_fields::validate_description`].
    pub description: Option<String>,
    /// Access and allowed networks (default: full, anywhere).
    pub restrictions: Restrictions,
}

impl TokenRecord {
    pub fn created_at(&self) -> i64 {
        self.created_micros.div_euclid(1_000_000)
    }

    /// Which fields `update` would change on this record, in a fixed order (`name`, `owner`,
    /// `description`); a field set to what it already is does not count.
    pub fn changed_by(&self, update: &TokenUpdate) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if update.name.as_ref().is_some_and(|n| *n != self.name) {
            changed.push("name");
        }
        if update.owner.as_ref().is_some_and(|o| *o != self.owner) {
            changed.push("owner");
        }
        if update
            .description
            .as_ref()
            .is_some_and(|d| *d != self.description)
        {
            changed.push("description");
        }
        if update
            .networks
            .as_ref()
            .is_some_and(|n| *n != self.restrictions.networks)
        {
            changed.push("allowedCidrs");
        }
        if update.access.is_some_and(|a| a != self.restrictions.access) {
            changed.push("access");
        }
        changed
    }

    /// This record with `update` applied.
    pub fn updated(&self, update: &TokenUpdate) -> TokenRecord {
        TokenRecord {
            name: update.name.clone().unwrap_or_else(|| self.name.clone()),
            owner: update.owner.clone().unwrap_or_else(|| self.owner.clone()),
            description: update
                .description
                .clone()
                .unwrap_or_else(|| self.description.clone()),
            restrictions: Restrictions {
                access: update.access.unwrap_or(self.restrictions.access),
                networks: update
                    .networks
                    .clone()
                    .unwrap_or_else(|| self.restrictions.networks.clone()),
            },
            ..self.clone()
        }
    }
}

/// An edit of a token's name, owner, description, allowed networks or access (never its
/// secret or expiry), values
/// already validated. `None` leaves a field as it is; for owner and description,
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenUpdate {
    pub name: Option<String>,
    pub owner: Option<Option<String>>,
    pub description: Option<Option<String>>,
    /// New allowed networks (an empty list: anywhere).
    pub networks: Option<AllowedNetworks>,
    pub access: Option<Access>,
}

/// What an update did: the record before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatedToken {
    pub before: TokenRecord,
    pub after: TokenRecord,
}

/// The case-insensitive form of an owner, for the listing's `?owner=` filter (the same
/// folding as names).
pub fn fold_owner(owner: &str) -> String {
    crate::domain::token_fields::fold_name(owner)
}

/// Token counts for metrics: aggregates only, never an id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenStats {
    pub active: u64,
    pub expired: u64,
    /// Active tokens that stop working within 1, 7 and 30 days (`expiresAt - now <= window`).
    pub expiring_1d: u64,
    pub expiring_7d: u64,
    pub expiring_30d: u64,
    /// Active tokens not used for 30 and 90 days: their last use (as stored: flushed), or
    /// their creation if never used, at least that long ago.
    pub unused_30d: u64,
    pub unused_90d: u64,
    /// Active tokens outside the lifetime policy (`--max-token-lifetime`,
    /// `--require-expiry`): flagged, never revoked.
    pub violating_policy: u64,
}

/// One day in seconds.
const DAY: i64 = 86_400;

impl TokenStats {
    /// Counts one token at `now` (unix seconds): `last_activity` is its stored last-used time,
    /// or its creation time if it was never used. The rule every store follows (the
    /// PostgreSQL store writes the same in SQL).
    pub fn add(&mut self, now: i64, expires_at: Option<i64>, last_activity: i64, violates: bool) {
        self.violating_policy += u64::from(violates);
        match expires_at {
            Some(e) if now >= e => {
                self.expired += 1;
                return;
            }
            Some(e) => {
                self.expiring_1d += u64::from(e - now <= DAY);
                self.expiring_7d += u64::from(e - now <= 7 * DAY);
                self.expiring_30d += u64::from(e - now <= 30 * DAY);
            }
            None => {}
        }
        self.active += 1;
        let idle = now.saturating_sub(last_activity);
        self.unused_30d += u64::from(idle >= 30 * DAY);
        self.unused_90d += u64::from(idle >= 90 * DAY);
    }
}

/// One page of the newest-first listing.
#[derive(Debug)]
pub struct TokenPage {
    pub items: Vec<TokenRecord>,
    /// Opaque position after the last item, when more items follow.
    pub next_cursor: Option<[u8; ORDER_KEY_LEN]>,
}

/// A token's position in the newest-first listing, as a cursor carries it: created µs (8,
/// big-endian) ‖ id (16). Creation times are after 1970, so the sign bit is clear and byte
/// order is time order.
pub fn order_key(created_micros: i64, id: &TokenId) -> [u8; ORDER_KEY_LEN] {
    let mut k = [0u8; ORDER_KEY_LEN];
    k[..8].copy_from_slice(&created_micros.max(0).to_be_bytes());
    k[8..].copy_from_slice(&id.0);
    k
}

/// Parses a listing cursor (48 hex characters).
pub fn parse_cursor(s: &str) -> Option<[u8; ORDER_KEY_LEN]> {
    crate::domain::encoding::decode_hex(s)
}

/// One admin account as stored.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminAccount {
    /// Argon2id PHC string (`$argon2id$v=19$...`).
    pub password_hash: String,
    /// Still the password generated at first start (the console shows a banner).
    pub initial_password: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last password change.
    pub password_changed_at: i64,
}

impl std::fmt::Debug for AdminAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccount")
            .field("password_hash", &"<redacted>")
            .field("initial_password", &self.initial_password)
            .finish_non_exhaustive()
    }
}

/// A token as exported: its hash (never a secret), record and last-used time.
#[derive(Debug, Clone)]
pub struct ExportedToken {
    pub hash: TokenHash,
    pub record: TokenRecord,
    pub last_used: Option<i64>,
}

/// Filters for reading the log.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub limit: usize,
    /// Return events strictly older than this id.
    pub before: Option<[u8; 16]>,
    pub token_id: Option<String>,
    pub event: Option<String>,
}

/// Parses an audit cursor (32 hex characters).
pub fn parse_audit_cursor(s: &str) -> Option<[u8; 16]> {
    crate::domain::encoding::decode_hex(s)
}

/// What verification needs about a token. The name is copied out inline when it fits
/// (64 bytes), so a lookup allocates nothing for the usual name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedToken {
    pub id: TokenId,
    pub expires_at: Option<i64>,
    pub name: Text,
    /// What forward-auth checks after the secret: shared, never copied.
    pub restrictions: Restrictions,
}

/// Which of a token's secrets a lookup matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretUsed {
    /// The current secret; `ends_previous_on_use`: its first use ends a previous secret
    /// (a rotation with `untilNewSecretUsed` whose new secret has not been used yet).
    Current { ends_previous_on_use: bool },
    /// The previous secret of a rotation's overlap, which stops working at `ends_at` (unix
    /// seconds); `current` is the hash of the token's current secret.
    Previous { current: TokenHash, ends_at: i64 },
}

/// A token's previous secret during a rotation's overlap, as stored (only its hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousSecret {
    pub hash: TokenHash,
    /// The first second at which it stops working.
    pub ends_at: i64,
    /// It also ends at the new secret's first use.
    pub until_new_secret_used: bool,
}

/// What a rotation did: the new secret (shown once), the token as it is (same id, name and
/// fields), the previous secret it now has, and the one that previous secret replaced.
#[derive(Debug)]
pub struct Rotated {
    pub secret: crate::domain::token::PlaintextToken,
    pub record: TokenRecord,
    pub previous: Option<PreviousSecret>,
    pub replaced: Option<PreviousSecret>,
}

/// Readies an event that happened at `now` (unix seconds) for appending: token-shaped text in
/// its free-text fields redacted, `at` set, and its key (8 bytes of µs since the epoch, 8 of
/// the store's `sequence`) chosen and written as its `id`. Every store appends through this.
pub fn stamp_audit(
    event: &mut crate::domain::audit::AuditEvent,
    now: i64,
    sequence: u64,
) -> [u8; 16] {
    for text in [&mut event.actor, &mut event.token_name, &mut event.reason]
        .into_iter()
        .flatten()
    {
        if let std::borrow::Cow::Owned(clean) = crate::domain::redact::redact_secrets(text) {
            *text = clean;
        }
    }
    event.at = crate::domain::time::format_rfc3339(now);
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&now.saturating_mul(1_000_000).max(0).to_be_bytes());
    key[8..].copy_from_slice(&sequence.to_be_bytes());
    event.id = crate::domain::encoding::hex(&key);
    key
}

/// A console session as a shared store keeps it (cluster mode), under the blake3 of its
/// cookie. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub username: String,
    pub csrf_token: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
}

/// One address's admin guesses as a shared store counts them for every node (cluster mode).
/// Times are unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginGuesses {
    /// Whether this guess was counted (it was not if the address is locked out, or has used
    /// its free guesses with none of them decided yet).
    pub counted: bool,
    /// Guesses since the last success or since they were forgotten, this one included.
    pub guesses: u32,
    /// Until when the address is locked out; 0 if it never was.
    pub locked_until_ms: i64,
}

/// What one sync of a shared store confirmed: the revision this node now reflects, and when
/// (on this node's clock) the store's revision was read — the moment freshness counts from,
/// not the end of the sync, which a paused process may reach much later.
#[derive(Debug, Clone)]
pub struct Synced {
    pub revision: u64,
    pub confirmed_at: std::time::Instant,
    /// For each change this sync applied from the feed: milliseconds from its commit to its
    /// read here, on the database's clock (no clock skew between hosts enters it).
    pub propagation_ms: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_windows_are_inclusive_and_only_for_active_tokens() {
        let now = 1_000_000_000;
        let mut s = TokenStats::default();
        // Exactly 1 day left: within 1d; exactly 30 days idle: unused for 30d.
        s.add(now, Some(now + DAY), now - 30 * DAY, false);
        // Just over: not within 1d, but within 7d; 29 days idle.
        s.add(now, Some(now + DAY + 1), now - 30 * DAY + 1, true);
        // Never expires, idle 90 days.
        s.add(now, None, now - 90 * DAY, false);
        // Expired (now == expiresAt), long idle: only `expired`.
        s.add(now, Some(now), now - 400 * DAY, false);
        assert_eq!(
            s,
            TokenStats {
                active: 3,
                expired: 1,
                expiring_1d: 1,
                expiring_7d: 2,
                expiring_30d: 2,
                unused_30d: 2,
                unused_90d: 1,
                violating_policy: 1,
            }
        );
    }
}

/// A webhook event waiting in the outbox for one receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    /// Its place in the outbox, set by the store (the order entries are tried in).
    #[serde(skip)]
    pub seq: u64,
    /// The event's stable id (`evt_…`): the same in every attempt, for the receiver's
    /// de-duplication.
    pub event_id: String,
    pub url: String,
    /// The JSON body, fixed when queued: every attempt sends the same bytes.
    pub body: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Unix ms before which it is not tried again.
    pub next_attempt_ms: i64,
    /// Unix ms when queued.
    pub queued_ms: i64,
}

/// A lifecycle scan's claim on the window it covered: it queues its events only if the scan
/// mark is still `expected` (no other scan covered the window meanwhile), moving it to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanMark {
    pub expected: Option<i64>,
    pub to: i64,
}

/// How much waits in the webhook outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxBacklog {
    pub pending: u64,
    /// Unix ms when the oldest waiting entry was queued.
    pub oldest_queued_ms: Option<i64>,
}
