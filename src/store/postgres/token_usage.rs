//! Token usage on PostgreSQL, merged across nodes: `pa_auth_usage_days` (token, day → count)
//! and `pa_auth_usage_addresses` (token, address → first seen, last seen, count), both
//! removed with their token (`ON DELETE CASCADE`). Each node's flush *adds* its interval's
//! delta (`count = count + EXCLUDED.count`, first seen the least, last seen the greatest), so
//! no node's flush overwrites another's and the order of flushes does not matter; then the
//! flushed tokens' days out of the window and addresses beyond the ten seen last are deleted.
//! An address is new to a token when its row is inserted, not updated (`xmax = 0`): of two
//! nodes flushing the same new address at once, exactly one is told.

use std::net::IpAddr;

use super::PgStore;
use crate::domain::token::TokenId;
use crate::domain::usage::{first_kept_day, AddressUse, Usage, ADDRESSES_KEPT};
use crate::store::error::Result;

impl PgStore {
    pub(super) fn stored_usage(&self, id: TokenId) -> Result<Usage> {
        let (days, addrs) = self.with_client(|c| {
            let days = c.query(
                "SELECT day, count FROM pa_auth_usage_days WHERE token_id = $1 ORDER BY day",
                &[&&id.0[..]],
            )?;
            let addrs = c.query(
                "SELECT addr, first_seen, last_seen, count FROM pa_auth_usage_addresses \
                 WHERE token_id = $1 ORDER BY last_seen DESC, addr LIMIT $2",
                &[&&id.0[..], &i64::try_from(ADDRESSES_KEPT).unwrap_or(10)],
            )?;
            Ok((days, addrs))
        })?;
        let mut usage = Usage {
            days: days
                .iter()
                .map(|r| {
                    let day: i32 = r.get(0);
                    let count: i64 = r.get(1);
                    (i64::from(day), u64::try_from(count).unwrap_or(0))
                })
                .collect(),
            addresses: addrs
                .iter()
                .filter_map(|r| {
                    let addr: String = r.get(0);
                    let count: i64 = r.get(3);
                    Some(AddressUse {
                        addr: addr.parse().ok()?,
                        first_seen: r.get(1),
                        last_seen: r.get(2),
                        count: u64::try_from(count).unwrap_or(0),
                    })
                })
                .collect(),
        };
        // The same order and bounds as every other store (ties by address).
        usage.prune(crate::domain::usage::day_of(crate::domain::time::now_unix()));
        Ok(usage)
    }

    pub(super) fn merge_usage_chunk(
        &self,
        chunk: &[(TokenId, Usage)],
        today: i64,
    ) -> Result<Vec<(TokenId, Vec<IpAddr>)>> {
        let mut sorted: Vec<&(TokenId, Usage)> = chunk.iter().collect();
        // One lock order for every node (fewer deadlocks between concurrent flushes).
        sorted.sort_unstable_by_key(|(id, _)| id.0);
        let ids: Vec<&[u8]> = sorted.iter().map(|(id, _)| &id.0[..]).collect();
        let (mut d_ids, mut d_days, mut d_counts) = (Vec::new(), Vec::new(), Vec::new());
        let (mut a_ids, mut a_addrs, mut a_first, mut a_last, mut a_counts) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, usage) in &sorted {
            for &(day, count) in &usage.days {
                d_ids.push(&id.0[..]);
                d_days.push(i32::try_from(day).unwrap_or(0));
                d_counts.push(i64::try_from(count).unwrap_or(i64::MAX));
            }
            let mut addrs: Vec<&AddressUse> = usage.addresses.iter().collect();
            addrs.sort_unstable_by_key(|a| a.addr.to_string());
            for a in addrs {
                a_ids.push(&id.0[..]);
                a_addrs.push(a.addr.to_string());
                a_first.push(a.first_seen);
                a_last.push(a.last_seen);
                a_counts.push(i64::try_from(a.count).unwrap_or(i64::MAX));
            }
        }
        let first_day = i32::try_from(first_kept_day(today)).unwrap_or(0);
        let kept = i64::try_from(ADDRESSES_KEPT).unwrap_or(10);
        let commit_sent = std::cell::Cell::new(false);
        let (written, inserted) = self.with_client_retrying(
            |c| {
                commit_sent.set(false);
                let mut tx = c.transaction()?;
                // Deleted tokens have no row to join (and the foreign key refuses a token
                // deleted meanwhile: the round fails and is retried, without it).
                let written = tx.query(
                    "SELECT id FROM pa_auth_tokens WHERE id = ANY($1) ORDER BY id",
                    &[&ids],
                )?;
                tx.execute(
                    "INSERT INTO pa_auth_usage_days (token_id, day, count) \
                     SELECT u.id, u.day, u.count \
                     FROM unnest($1::bytea[], $2::int4[], $3::int8[]) AS u(id, day, count) \
                     JOIN pa_auth_tokens t ON t.id = u.id ORDER BY u.id, u.day \
                     ON CONFLICT (token_id, day) \
                     DO UPDATE SET count = pa_auth_usage_days.count + EXCLUDED.count",
                    &[&d_ids, &d_days, &d_counts],
                )?;
                let inserted = tx.query(
                    "INSERT INTO pa_auth_usage_addresses \
                       (token_id, addr, first_seen, last_seen, count) \
                     SELECT u.id, u.addr, u.first_seen, u.last_seen, u.count \
                     FROM unnest($1::bytea[], $2::text[], $3::int8[], $4::int8[], $5::int8[]) \
                       AS u(id, addr, first_seen, last_seen, count) \
                     JOIN pa_auth_tokens t ON t.id = u.id ORDER BY u.id, u.addr \
                     ON CONFLICT (token_id, addr) DO UPDATE SET \
                       first_seen = LEAST(pa_auth_usage_addresses.first_seen, EXCLUDED.first_seen), \
                       last_seen = GREATEST(pa_auth_usage_addresses.last_seen, EXCLUDED.last_seen), \
                       count = pa_auth_usage_addresses.count + EXCLUDED.count \
                     RETURNING token_id, addr, (xmax = 0) AS inserted",
                    &[&a_ids, &a_addrs, &a_first, &a_last, &a_counts],
                )?;
                tx.execute(
                    "DELETE FROM pa_auth_usage_days WHERE token_id = ANY($1) AND day < $2",
                    &[&ids, &first_day],
                )?;
                tx.execute(
                    "DELETE FROM pa_auth_usage_addresses a USING ( \
                       SELECT token_id, addr, row_number() OVER \
                         (PARTITION BY token_id ORDER BY last_seen DESC, addr) AS n \
                       FROM pa_auth_usage_addresses WHERE token_id = ANY($1)) r \
                     WHERE a.token_id = r.token_id AND a.addr = r.addr AND r.n > $2",
                    &[&ids, &kept],
                )?;
                commit_sent.set(true);
                tx.commit()?;
                Ok((written, inserted))
            },
            // Counts add: a commit that may have landed is not repeated.
            || !commit_sent.get(),
        )?;
        Ok(written
            .iter()
            .map(|row| {
                let id: Vec<u8> = row.get(0);
                let id = TokenId(id.as_slice().try_into().unwrap_or([0; 16]));
                let new = inserted
                    .iter()
                    .filter(|r| r.get::<_, bool>(2) && r.get::<_, &[u8]>(0) == &id.0[..])
                    .filter_map(|r| r.get::<_, String>(1).parse().ok())
                    .collect();
                (id, new)
            })
            .collect())
    }
}
