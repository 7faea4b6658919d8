//! Leak response use-cases, for the admin API, the revocation API, the console and the CLI:
//! revoke leaked secrets by value ([`Service::revoke_leaked`]) and delete tokens by filter
//! with a dry run first ([`Service::bulk_delete`]). Both delete through the one delete
//! ([`Service::delete_tokens`]): gone from every node before they answer, one `token.deleted`
//! per token, plus one event for the operation with its counts. No secret is kept, logged or
//! audited: values arrive as hashes.

use super::tokens::Deleted;
use super::{Actor, Error, Result, Service};
use crate::domain::audit::{AuditEvent, AuditKind};
use crate::domain::leak_response::{TokenFilter, MAX_BULK_DELETE, MAX_PASTED};
use crate::domain::token::{TokenHash, TokenId};
use crate::store::TokenRecord;

/// Tokens listed by a dry run.
pub const SAMPLE_LEN: usize = 20;

/// Tokens read from the store at a time while a filter is evaluated.
const SCAN_PAGE: usize = 1000;

/// A token found and deleted by a revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub id: TokenId,
    pub name: String,
}

/// What a revoke did with the values it was given.
#[derive(Debug, Default)]
pub struct RevokeOutcome {
    /// Known tokens, deleted now (in the order given).
    pub revoked: Vec<Revoked>,
    /// Well-formed tokens that no token has (never issued here, or already deleted).
    pub unknown: usize,
    /// Values that are not pa-auth tokens at all (prefix, length, charset or checksum).
    pub malformed: usize,
    /// Values given more than once (counted once).
    pub duplicates: usize,
    /// Known tokens whose delete failed (the store refused): not revoked.
    pub failed: Vec<Revoked>,
}

/// What a bulk delete selected, and (for a real run) deleted.
#[derive(Debug)]
pub struct BulkOutcome {
    /// How many tokens the filter selects now.
    pub count: usize,
    /// Up to [`SAMPLE_LEN`] of them, newest first (a dry run).
    pub sample: Vec<(TokenRecord, Option<i64>)>,
    /// A real run: how many were deleted, and the ones whose delete failed.
    pub deleted: usize,
    pub failed: Vec<Revoked>,
    /// Which tokens the filter selects: a digest of their ids, so a real run can check that
    /// it deletes the tokens the dry run showed, not only as many.
    pub selection: String,
}

/// What a real bulk delete must still find: the dry run's count and, when given, its
/// selection digest (the same count of other tokens is a conflict too).
#[derive(Debug, Clone, Copy)]
pub struct BulkConfirm<'a> {
    pub count: u64,
    pub selection: Option<&'a str>,
}

impl Service {
    /// Revokes leaked secrets: `values` are the pasted values already read as token hashes
    /// (`None`: not a pa-auth token; see [`crate::domain::leak_response::read_pasted`]). Each
    /// known token — by its current secret or a rotation's previous one — is deleted at once
    /// with `token.deleted` reason `reason`, then one `token.revoke` event records the counts.
    /// At most [`MAX_PASTED`] values. 503 (`Unavailable`) when some cluster node has not
    /// confirmed the deletes (they are done; retrying waits again).
    pub fn revoke_leaked(
        &self,
        actor: &Actor,
        values: &[Option<TokenHash>],
        reason: &str,
        now: i64,
    ) -> Result<RevokeOutcome> {
        if values.len() > MAX_PASTED {
            return Err(Error::Validation(vec![
                crate::domain::token_fields::FieldError::new(
                    "tokens",
                    format!("At most {MAX_PASTED} values a request"),
                ),
            ]));
        }
        let mut outcome = RevokeOutcome::default();
        let mut seen: Vec<TokenHash> = Vec::with_capacity(values.len());
        let mut ids: Vec<TokenId> = Vec::new();
        for value in values {
            let Some(hash) = value else {
                outcome.malformed += 1;
                continue;
            };
            if seen.contains(hash) {
                outcome.duplicates += 1;
                continue;
            }
            seen.push(*hash);
            // Revoked wherever it is used from: the client address only decides the
            // network check, which a revoke ignores.
            match self.store.lookup_secret(hash, None)? {
                // Two secrets of one token (current and previous) are one token.
                Some((token, _, _)) if ids.contains(&token.id) => outcome.duplicates += 1,
                Some((token, _, _)) => ids.push(token.id),
                None => outcome.unknown += 1,
            }
        }
        let deleted = self.delete_tokens(actor, &ids, Some(reason), now)?;
        // A token deleted by someone else between lookup and delete is as gone as unknown.
        outcome.unknown += ids.len() - deleted.records.len() - deleted.failed.len();
        outcome.revoked = deleted
            .records
            .iter()
            .map(|r| Revoked {
                id: r.id,
                name: r.name.clone(),
            })
            .collect();
        outcome.failed = failed_of(&deleted, |id| {
            self.store.token_by_id(id).ok().flatten().map(|r| r.name)
        });
        self.audit(
            now,
            AuditEvent {
                count: Some(outcome.revoked.len() as u64),
                reason: Some(format!(
                    "{reason}: {} revoked, {} unknown, {} malformed, {} duplicate, {} failed{}",
                    outcome.revoked.len(),
                    outcome.unknown,
                    outcome.malformed,
                    outcome.duplicates,
                    outcome.failed.len(),
                    unconfirmed(&deleted.behind)
                )),
                ..AuditEvent::of(AuditKind::TokenRevoke).by(actor)
            },
        );
        if !deleted.behind.is_empty() {
            return Err(not_all_confirmed(&deleted.behind));
        }
        if let Some((_, e)) = deleted.failed.into_iter().next() {
            if outcome.revoked.is_empty() {
                // Nothing could be deleted: the store is failing, say so as an error.
                return Err(e);
            }
        }
        Ok(outcome)
    }

    /// Selects the tokens `filter` matches at `now`, reading the store a page at a time.
    /// `confirm`: `None` is a dry run (the count, a sample and the selection digest; nothing
    /// changes); `Some` is a real run, which re-evaluates the filter and deletes only if it
    /// still selects exactly that many — and, given the dry run's selection, exactly those
    /// tokens (else `Conflict`: tokens were created, used or deleted since the dry run) —
    /// and at most [`MAX_BULK_DELETE`].
    pub fn bulk_delete(
        &self,
        actor: &Actor,
        filter: &TokenFilter,
        confirm: Option<BulkConfirm<'_>>,
        now: i64,
    ) -> Result<BulkOutcome> {
        let real = confirm.is_some();
        let mut digest = blake3::Hasher::new();
        let needs_used = filter.needs_last_used();
        let mut count = 0usize;
        let mut sample = Vec::new();
        let mut ids: Vec<TokenId> = Vec::new();
        let mut cursor = None;
        loop {
            let page = match &filter.owner_folded {
                // The owner index (PostgreSQL) or the owner walk (sled) does the first cut.
                Some(owner) => {
                    self.store
                        .list_tokens_of_owner(owner, SCAN_PAGE, cursor.as_ref())?
                }
                None => self.store.list_tokens(SCAN_PAGE, cursor.as_ref())?,
            };
            for record in page.items {
                // A last-used time is a store read per token on PostgreSQL: only when asked.
                let used = if needs_used {
                    self.last_used_of(record.id)?
                } else {
                    None
                };
                if !filter.matches(
                    &record.name,
                    record.owner.as_deref(),
                    record.created_micros,
                    used,
                    now,
                ) {
                    continue;
                }
                count += 1;
                digest.update(&record.id.0);
                if real {
                    // Past the cap the ids are not kept: the run is refused below.
                    if ids.len() <= MAX_BULK_DELETE {
                        ids.push(record.id);
                    }
                } else if sample.len() < SAMPLE_LEN {
                    let used = if needs_used {
                        used
                    } else {
                        self.last_used_of(record.id)?
                    };
                    sample.push((record, used));
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let selection = crate::domain::encoding::hex(&digest.finalize().as_bytes()[..16]);
        let Some(confirm) = confirm else {
            return Ok(BulkOutcome {
                count,
                sample,
                deleted: 0,
                failed: Vec::new(),
                selection,
            });
        };
        if u64::try_from(count) != Ok(confirm.count) {
            return Err(Error::Conflict(format!(
                "The filter now selects {count} tokens, not {}: tokens were created, \
                 used or deleted since the dry run. Run the dry run again and confirm its count",
                confirm.count
            )));
        }
        if confirm.selection.is_some_and(|s| s != selection) {
            return Err(Error::Conflict(format!(
                "The filter still selects {count} tokens, but not the ones the dry run showed: \
                 tokens were created, used or deleted since. Run the dry run again and confirm \
                 its selection"
            )));
        }
        if count > MAX_BULK_DELETE {
            return Err(Error::Validation(vec![
                crate::domain::token_fields::FieldError::new(
                    "confirmCount",
                    format!(
                        "The filter selects {count} tokens; one bulk delete removes at most \
                         {MAX_BULK_DELETE}: narrow the filter (e.g. createdBefore) and repeat"
                    ),
                ),
            ]));
        }
        let deleted = self.delete_tokens(actor, &ids, Some("bulk delete"), now)?;
        let failed = failed_of(&deleted, |id| {
            self.store.token_by_id(id).ok().flatten().map(|r| r.name)
        });
        self.audit(
            now,
            AuditEvent {
                count: Some(deleted.records.len() as u64),
                reason: Some(format!(
                    "filter: {}; {} selected, {} deleted, {} failed{}",
                    filter.describe(),
                    count,
                    deleted.records.len(),
                    failed.len(),
                    unconfirmed(&deleted.behind)
                )),
                ..AuditEvent::of(AuditKind::TokenBulkDelete).by(actor)
            },
        );
        if !deleted.behind.is_empty() {
            return Err(not_all_confirmed(&deleted.behind));
        }
        Ok(BulkOutcome {
            count,
            sample: Vec::new(),
            deleted: deleted.records.len(),
            failed,
            selection,
        })
    }
}

/// The operation event's note on nodes that had not applied the deletes when it answered.
fn unconfirmed(behind: &[String]) -> String {
    if behind.is_empty() {
        String::new()
    } else {
        format!("; not yet applied by {}", behind.join(", "))
    }
}

/// The tokens whose delete failed, named as the store still has them.
fn failed_of(deleted: &Deleted, name_of: impl Fn(TokenId) -> Option<String>) -> Vec<Revoked> {
    deleted
        .failed
        .iter()
        .map(|(id, _)| Revoked {
            id: *id,
            name: name_of(*id).unwrap_or_default(),
        })
        .collect()
}

/// Several deletes that some nodes have not confirmed (they may still accept the tokens).
fn not_all_confirmed(behind: &[String]) -> Error {
    log::error!(
        "tokens are deleted, but these nodes have not confirmed it and may still accept \
         them: {}; answering 503",
        behind.join(", ")
    );
    Error::Unavailable(
        "The tokens are deleted, but not every node has confirmed it yet; repeat the request \
         to wait again",
    )
}
