//! Token use-cases, one implementation for the admin API, the console and the CLI: create
//! (within the lifetime policy; durable before it returns), edit the name, owner or
//! description, delete (gone from the store, the index and the last-used tracker before it
//! returns), read, list (optionally by owner), look up a leaked secret, and the backup gate
//! that keeps every change out of a snapshot being taken. Each change is audited here.

use super::{Actor, Error, Result, Service};
use crate::domain::audit::{AuditEvent, AuditKind};
use crate::domain::token::{AuthFailure, PlaintextToken, TokenHash, TokenId};
use crate::store::{fold_owner, TokenRecord, TokenUpdate, UpdatedToken, ORDER_KEY_LEN};

/// The longest a delete waits for the other nodes of a cluster to apply it: above the
/// largest `--max-staleness` (30 s) plus the store's margin, so an honest node is always
/// either waited for or refusing.
const DELETE_WAIT_CAP: std::time::Duration = std::time::Duration::from_secs(60);

/// A delete that some nodes have not confirmed (they may still accept the token).
pub(super) fn not_confirmed(id: TokenId, behind: &[String]) -> Error {
    log::error!(
        "token {id} is deleted, but these nodes neither applied it nor went silent within {} s \
         and may still accept it: {}; answering 503",
        DELETE_WAIT_CAP.as_secs(),
        behind.join(", ")
    );
    Error::Unavailable(
        "The token is deleted, but not every node has confirmed it yet; retry the delete to \
         wait again",
    )
}

/// What [`Service::delete_tokens`] did.
#[derive(Debug, Default)]
pub struct Deleted {
    /// The tokens deleted, in the order asked.
    pub records: Vec<TokenRecord>,
    /// Tokens whose delete failed, and why (the others went on).
    pub failed: Vec<(TokenId, Error)>,
    /// Cluster nodes that had not applied the deletes when the wait gave up (they may
    /// still accept those tokens): the caller answers 503.
    pub behind: Vec<String>,
}

/// A token with its latest last-used time.
pub type TokenWithUse = (TokenRecord, Option<i64>);

/// One page of the newest-first listing.
#[derive(Debug)]
pub struct TokenList {
    pub items: Vec<TokenWithUse>,
    /// Where the next page starts, when there is one.
    pub next_cursor: Option<[u8; ORDER_KEY_LEN]>,
}

/// A token to create, every field already validated ([`crate::domain::token_fields`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewToken {
    pub name: String,
    pub expires_at: Option<i64>,
    pub owner: Option<String>,
    pub description: Option<String>,
    /// Access and allowed networks (default: full, anywhere).
    pub restrictions: crate::domain::restrictions::Restrictions,
}

/// What a backup held.
pub use super::backup::BackupSummary;

impl Service {
    /// Creates a token (its fields already validated: [`crate::domain::token_fields`]) if its
    /// expiry is within the lifetime policy, else `Validation` on `expiresAt`. The record is
    /// durable when this returns; the secret is returned once and never kept.
    pub fn create_token(
        &self,
        actor: &Actor,
        new: &NewToken,
        now: i64,
    ) -> Result<(PlaintextToken, TokenRecord)> {
        self.lifetime_policy
            .check_new(new.expires_at, now)
            .map_err(|e| Error::Validation(vec![e]))?;
        let (secret, record) = {
            let _shared = self.mutation_shared();
            self.store.create_token(
                &new.name,
                new.expires_at,
                new.owner.as_deref(),
                new.description.as_deref(),
                &new.restrictions,
                now_micros(now),
            )?
        };
        self.audit(
            now,
            AuditEvent {
                token_id: Some(record.id.to_string()),
                token_name: Some(record.name.clone()),
                ..AuditEvent::of(AuditKind::TokenCreated).by(actor)
            },
        );
        Ok((secret, record))
    }

    /// Deletes a token: when this returns it is gone from the store (durably), from the
    /// authentication index and from the last-used tracker. `NotFound` if there is none.
    pub fn delete_token(&self, actor: &Actor, id: TokenId, now: i64) -> Result<TokenRecord> {
        let mut deleted = self.delete_tokens(actor, &[id], None, now)?;
        if let Some((_, e)) = deleted.failed.pop() {
            return Err(e);
        }
        // In a cluster, "no such token" is as strong as a 204: a delete answered 503
        // below and retried finds the token gone, and waits again for every node.
        if !deleted.behind.is_empty() {
            return Err(not_confirmed(id, &deleted.behind));
        }
        deleted.records.pop().ok_or(Error::NotFound)
    }

    /// The one delete, for one token or many (a leak response, a bulk delete): each is
    /// removed from the store (durably), the authentication index and the last-used
    /// tracker; then, in a cluster, one wait until every live node has applied them all
    /// (also when none was found: a retried delete waits again). Each deleted token is
    /// audited as `token.deleted` with `reason`. An id that is not there is skipped; a
    /// failure is kept with its id and the rest go on.
    ///
    /// One token's event is written after the wait, naming the nodes that have not confirmed
    /// (if any). Of many, each event is written as its delete lands, so a crash in the middle
    /// of a long operation leaves every token it deleted audited (and its webhook queued);
    /// the caller's operation event says what the cluster confirmed.
    pub(super) fn delete_tokens(
        &self,
        actor: &Actor,
        ids: &[TokenId],
        reason: Option<&str>,
        now: i64,
    ) -> Result<Deleted> {
        let deleted_event = |record: &TokenRecord, reason: Option<String>| AuditEvent {
            token_id: Some(record.id.to_string()),
            token_name: Some(record.name.clone()),
            reason,
            ..AuditEvent::of(AuditKind::TokenDeleted).by(actor)
        };
        let one = ids.len() == 1;
        let mut out = Deleted::default();
        for &id in ids {
            let deleted = {
                let _shared = self.mutation_shared();
                self.store.delete_token(id)
            };
            match deleted {
                Ok(Some(record)) => {
                    self.tracker.forget(&id);
                    self.usage.forget(&id);
                    if !one {
                        self.audit(now, deleted_event(&record, reason.map(str::to_owned)));
                    }
                    out.records.push(record);
                }
                Ok(None) => {}
                Err(e) => out.failed.push((id, e.into())),
            }
        }
        if !one && !out.records.is_empty() {
            // The last event is durable now too (each delete's own flush made the earlier
            // ones durable).
            if let Err(e) = self.store.flush() {
                log::error!("flushing the audit events of a multi-token delete failed: {e}");
            }
        }
        // Gone everywhere before the answer: every live node has applied the deletes.
        out.behind = self.nodes_behind()?;
        if let (true, Some(record)) = (one, out.records.first()) {
            let mut why = reason.map(str::to_owned);
            if !out.behind.is_empty() {
                // Deleted in the store, but these nodes could still accept it: audited as
                // deleted, answered 503 (no 204 that is not true).
                let behind = format!("not yet applied by {}", out.behind.join(", "));
                why = Some(match why {
                    Some(r) => format!("{r}; {behind}"),
                    None => behind,
                });
            }
            self.audit(now, deleted_event(record, why));
        }
        Ok(out)
    }

    /// With a shared store: waits until every other live node has applied the store's
    /// current revision; the nodes that still have not when the wait gives up. Each node is
    /// waited for until its own --max-staleness after it last read the store (it fails
    /// closed from then on, and --max-staleness is capped below the wait); the cap only
    /// guards against a node that reports progress it does not make.
    pub(super) fn nodes_behind(&self) -> Result<Vec<String>> {
        if !self.shared {
            return Ok(Vec::new());
        }
        let revision = self.store.change_counter()?;
        Ok(self.store.wait_applied(revision, DELETE_WAIT_CAP)?)
    }

    /// Edits a token's name, owner or description (values already validated): durable when
    /// this returns, and the new name is what forward-auth sends from then on (on other
    /// nodes, from their next sync: a rename is not waited for like a delete, it opens
    /// nothing). `NotFound` if there is no such token, `Conflict` if another token has the
    /// new name ignoring case. Audited as `token.updated` naming the fields that changed,
    /// never their values; an edit that changes nothing is not audited.
    pub fn update_token(
        &self,
        actor: &Actor,
        id: TokenId,
        update: &TokenUpdate,
        now: i64,
    ) -> Result<UpdatedToken> {
        let updated = {
            let _shared = self.mutation_shared();
            self.store
                .update_token(id, update)?
                .ok_or(Error::NotFound)?
        };
        let changed = updated.before.changed_by(update);
        if !changed.is_empty() {
            self.audit(
                now,
                AuditEvent {
                    token_id: Some(id.to_string()),
                    token_name: Some(updated.after.name.clone()),
                    changed: Some(changed.into_iter().map(str::to_owned).collect()),
                    ..AuditEvent::of(AuditKind::TokenUpdated).by(actor)
                },
            );
        }
        Ok(updated)
    }

    /// One token and its last use. `NotFound` if there is none.
    pub fn token(&self, id: TokenId) -> Result<TokenWithUse> {
        let record = self.store.token_by_id(id)?.ok_or(Error::NotFound)?;
        Ok((record, self.last_used_of(id)?))
    }

    /// The calling token's own record (`GET /api/token`). A token deleted since it was
    /// verified is as good as never authenticated.
    pub fn own_token(&self, id: TokenId) -> Result<TokenWithUse> {
        let record = self
            .store
            .token_by_id(id)?
            .ok_or(Error::Unauthorized(AuthFailure::Unknown))?;
        Ok((record, self.last_used_of(id)?))
    }

    /// Up to `limit` tokens, newest first, after `cursor`; only those whose owner is `owner`
    /// ignoring case, when given.
    pub fn list_tokens(
        &self,
        limit: usize,
        cursor: Option<&[u8; ORDER_KEY_LEN]>,
        owner: Option<&str>,
    ) -> Result<TokenList> {
        let page = match owner {
            Some(owner) => {
                self.store
                    .list_tokens_of_owner(&fold_owner(owner.trim()), limit, cursor)?
            }
            None => self.store.list_tokens(limit, cursor)?,
        };
        let items = page
            .items
            .into_iter()
            .map(|r| {
                let used = self.last_used_of(r.id)?;
                Ok((r, used))
            })
            .collect::<Result<_>>()?;
        Ok(TokenList {
            items,
            next_cursor: page.next_cursor,
        })
    }

    /// Which token has this secret hash (a leaked secret, looked up without storing or
    /// logging it)? Audited whether found or not; `NotFound` if none.
    pub fn lookup_token(&self, actor: &Actor, hash: &TokenHash, now: i64) -> Result<TokenWithUse> {
        let found = self.store.lookup_token(hash)?;
        self.audit(
            now,
            AuditEvent {
                token_id: found.as_ref().map(|t| t.id.to_string()),
                reason: Some(
                    if found.is_some() {
                        "found"
                    } else {
                        "not_found"
                    }
                    .into(),
                ),
                ..AuditEvent::of(AuditKind::TokenLookup).by(actor)
            },
        );
        let token = found.ok_or(Error::NotFound)?;
        self.token(token.id)
    }

    /// The snapshot [`Service::backup`] would hand over, not handed over and so not audited
    /// (a `HEAD` of the backup).
    pub fn backup_snapshot(&self, now: i64) -> Result<Vec<u8>> {
        let _exclusive = self.mutation_exclusive();
        Ok(super::backup::write_backup(&*self.store, now)?.0)
    }

    /// A consistent, checksummed snapshot (`.pab`) of tokens, admins and the audit log;
    /// token and admin changes wait while it is taken. `deliver` hands it over (writes the
    /// file, or keeps it for the response); only a delivered backup is audited.
    pub fn backup(
        &self,
        actor: &Actor,
        now: i64,
        deliver: impl FnOnce(Vec<u8>) -> Result<()>,
    ) -> Result<BackupSummary> {
        let (bytes, summary) = {
            let _exclusive = self.mutation_exclusive();
            super::backup::write_backup(&*self.store, now)?
        };
        deliver(bytes)?;
        self.audit(
            now,
            AuditEvent {
                reason: Some(format!(
                    "{} tokens, {} admins, {} audit events",
                    summary.tokens, summary.admins, summary.audit_events
                )),
                ..AuditEvent::of(AuditKind::BackupCreated).by(actor)
            },
        );
        Ok(summary)
    }
}

/// Creation time in µs: the sub-second order within the listing, kept inside `now`'s second
/// (the second may have turned since the request began; the store keeps creation order
/// strictly increasing).
fn now_micros(now: i64) -> i64 {
    let full = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let second = now.saturating_mul(1_000_000);
    full.clamp(second, second.saturating_add(999_999))
}
