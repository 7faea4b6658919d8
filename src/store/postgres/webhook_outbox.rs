//! The webhook outbox on PostgreSQL: `pa_auth_webhook_outbox` (one row per event and
//! receiver, unique on both, so a repeated queueing is a no-op), the lifecycle scan mark in
//! `pa_auth_meta` (`webhook_scan_mark`), and the sender lease in `pa_auth_webhook_sender`:
//! one row naming the node that scans and sends, until when, on the database's clock (the
//! nodes' clocks may differ; the database's is the one they share).

use super::{fixed, record_of, PgStore, TOKEN_COLUMNS};
use crate::domain::token::TokenId;
use crate::store::error::Result;
use crate::store::records::{OutboxBacklog, OutboxEntry, ScanMark, TokenRecord};

/// The database's clock in unix ms.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::int8";

impl PgStore {
    pub(super) fn enqueue_webhooks(
        &self,
        entries: &[OutboxEntry],
        scan: Option<ScanMark>,
    ) -> Result<bool> {
        self.with_client(|c| {
            let mut tx = c.transaction()?;
            if let Some(scan) = scan {
                let mark: Option<i64> = tx
                    .query_opt(
                        "SELECT value FROM pa_auth_meta WHERE key = 'webhook_scan_mark' FOR UPDATE",
                        &[],
                    )?
                    .map(|row| row.get(0));
                if mark != scan.expected {
                    tx.rollback()?;
                    return Ok(false);
                }
                tx.execute(
                    "INSERT INTO pa_auth_meta (key, value) VALUES ('webhook_scan_mark', $1) \
                     ON CONFLICT (key) DO UPDATE SET value = $1",
                    &[&scan.to],
                )?;
            }
            for e in entries {
                tx.execute(
                    "INSERT INTO pa_auth_webhook_outbox \
                       (event_id, url, body, attempts, next_attempt_ms, queued_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id, url) DO NOTHING",
                    &[
                        &e.event_id,
                        &e.url,
                        &e.body,
                        &i32::try_from(e.attempts).unwrap_or(i32::MAX),
                        &e.next_attempt_ms,
                        &e.queued_ms,
                    ],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })
    }

    pub(super) fn webhook_scan_mark(&self) -> Result<Option<i64>> {
        Ok(self
            .with_client(|c| {
                c.query_opt(
                    "SELECT value FROM pa_auth_meta WHERE key = 'webhook_scan_mark'",
                    &[],
                )
            })?
            .map(|row| row.get(0)))
    }

    pub(super) fn lifecycle_candidates(
        &self,
        from: i64,
        to: i64,
        unused_after_days: Option<u32>,
    ) -> Result<Vec<(TokenRecord, Option<i64>)>> {
        // The same superset the embedded store returns: an expiry moment (30 days before it
        // to the expiry itself) may fall in the window, or the token may have gone unused
        // that long by its end. -1 = no unused rule.
        let unused = unused_after_days.map_or(-1i64, |d| i64::from(d) * 86_400);
        let rows = self.with_client(|c| {
            c.query(
                &format!(
                    "SELECT {TOKEN_COLUMNS}, last_used FROM pa_auth_tokens \
                     WHERE (expires_at > $1 AND expires_at - 2592000 <= $2) \
                        OR ($3::int8 >= 0 \
                            AND COALESCE(last_used, created_micros / 1000000) + $3::int8 > $1 \
                            AND COALESCE(last_used, created_micros / 1000000) + $3::int8 <= $2)"
                ),
                &[&from, &to, &unused],
            )
        })?;
        rows.iter()
            .map(|row| {
                let id = TokenId(fixed(row.get::<_, &[u8]>(0))?);
                Ok((record_of(id, row), row.get::<_, Option<i64>>(8)))
            })
            .collect()
    }

    pub(super) fn due_webhooks(
        &self,
        now_ms: i64,
        url: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.with_client(|c| {
            c.query(
                "SELECT seq, event_id, url, body, attempts, next_attempt_ms, queued_ms \
                 FROM pa_auth_webhook_outbox WHERE next_attempt_ms <= $1 \
                   AND ($3::text IS NULL OR url = $3) ORDER BY seq LIMIT $2",
                &[&now_ms, &limit, &url],
            )
        })?;
        Ok(rows
            .iter()
            .map(|row| OutboxEntry {
                seq: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                event_id: row.get(1),
                url: row.get(2),
                body: row.get(3),
                attempts: u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
                next_attempt_ms: row.get(5),
                queued_ms: row.get(6),
            })
            .collect())
    }

    pub(super) fn webhook_attempted(&self, seq: u64, retry: Option<(u32, i64)>) -> Result<()> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.with_client(|c| match retry {
            None => c.execute("DELETE FROM pa_auth_webhook_outbox WHERE seq = $1", &[&seq]),
            Some((attempts, next)) => c.execute(
                "UPDATE pa_auth_webhook_outbox SET attempts = $2, next_attempt_ms = $3 \
                 WHERE seq = $1",
                &[&seq, &i32::try_from(attempts).unwrap_or(i32::MAX), &next],
            ),
        })?;
        Ok(())
    }

    pub(super) fn webhook_backlog(&self) -> Result<OutboxBacklog> {
        let row = self.with_client(|c| {
            c.query_one(
                "SELECT count(*), min(queued_ms) FROM pa_auth_webhook_outbox",
                &[],
            )
        })?;
        Ok(OutboxBacklog {
            pending: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            oldest_queued_ms: row.get(1),
        })
    }

    /// Takes the lease if it is free or lapsed, renews it if it is this node's.
    pub(super) fn hold_webhook_lease(&self, ttl_ms: i64) -> Result<bool> {
        let held = self.with_client(|c| {
            c.query_opt(
                &format!(
                    "INSERT INTO pa_auth_webhook_sender (one, node_id, until_ms) \
                     VALUES (true, $1, {DB_NOW_MS} + $2) \
                     ON CONFLICT (one) DO UPDATE SET node_id = $1, until_ms = {DB_NOW_MS} + $2 \
                     WHERE pa_auth_webhook_sender.node_id = $1 \
                        OR pa_auth_webhook_sender.until_ms < {DB_NOW_MS} \
                     RETURNING node_id"
                ),
                &[&self.node_id, &ttl_ms],
            )
        })?;
        Ok(held.is_some())
    }

    pub(super) fn release_webhook_lease(&self) {
        let _ = self.with_client(|c| {
            c.execute(
                "DELETE FROM pa_auth_webhook_sender WHERE node_id = $1",
                &[&self.node_id],
            )
        });
    }
}
