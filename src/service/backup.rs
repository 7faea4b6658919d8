//! Backup files (`.pab`): a versioned, checksummed snapshot of the tokens (blake3 hashes,
//! never secrets, with last-used times), the admin accounts (Argon2id hashes) and the audit
//! log (both of its trees, as one oldest-first list; a restore puts each event back in the
//! tree of its kind, so backups from before the trees were split restore as well). Text,
//! one JSON object per line:
//!
//! ```text
//! PA-AUTH-BACKUP 1 2026-11-30T09:00:00Z
//! {"type":"token",...}
//! {"type":"admin",...}
//! {"type":"audit",...}
//! BLAKE3 <64 hex of every byte above this line>
//! ```
//!
//! A restore verifies the magic, the version and the checksum before it parses a single
//! record, and writes nothing unless all of the file is good.
//!
//! Writing and restoring report their progress per entry (token, last-used time, admin,
//! audit event; [`crate::progress`]). A restore imports in chunks of [`RESTORE_CHUNK`] so
//! the figures move: each import adds to what is there, and an import that fails midway
//! leaves a partly restored store either way (the store's own imports are chunked too), which
//! the next `restore --force` replaces.
//!
//! Versions: 2 added a token's `owner` and `description` (each absent when the token has
//! none). A backup is written as version 1 when no token has either, so releases that read
//! only version 1 still restore it; as version 2 otherwise, which those releases refuse by
//! its version rather than by an unknown field. Version 3 added a token's `allowedCidrs` and
//! `access` (absent when the token has no network policy / full access), written only when
//! some token is restricted, for the same reason. All three versions are read.

use serde::{Deserialize, Serialize};

use crate::domain::audit::AuditEvent;
use crate::domain::encoding::hex;
use crate::domain::restrictions::{validate_allowed_cidrs, Access, Restrictions};
use crate::domain::token::{TokenHash, TokenId};
use crate::progress::Progress;
use crate::service::error::{Error, Result};
use crate::store::{AdminAccount, Store, TokenRecord};

const MAGIC: &str = "PA-AUTH-BACKUP";
/// Written when some token has restrictions (allowed networks, read-only access).
const FORMAT_VERSION: u32 = 3;
/// Written when some token has an owner or a description, and none has restrictions.
const FORMAT_VERSION_WITH_PURPOSE: u32 = 2;
/// Written when no token has an owner or a description.
const FORMAT_VERSION_WITHOUT_PURPOSE: u32 = 1;
const CHECKSUM_PREFIX: &str = "BLAKE3 ";
/// Entries a restore hands to the store at once.
const RESTORE_CHUNK: usize = 10_000;

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
enum Line {
    #[serde(rename_all = "camelCase")]
    Token {
        hash: String,
        id: String,
        name: String,
        created_micros: i64,
        expires_at: Option<i64>,
        last_used: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        allowed_cidrs: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Admin {
        username: String,
        account: AdminAccount,
    },
    #[serde(rename_all = "camelCase")]
    Audit { key: String, event: AuditEvent },
}

/// What a backup holds, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupSummary {
    pub tokens: usize,
    pub admins: usize,
    pub audit_events: usize,
}

/// Serialises the whole store. The caller makes it consistent (the server holds its
/// mutation gate; offline, the data-dir lock is enough).
pub fn write_backup(store: &dyn Store, now: i64) -> Result<(Vec<u8>, BackupSummary)> {
    let tokens = store.export_tokens()?;
    let admins = store.export_admins()?;
    let audit = store.export_audit()?;
    let mut progress = Progress::start(
        "writing the backup",
        Some((tokens.len() + admins.len() + audit.len()) as u64),
    );
    let version = if tokens
        .iter()
        .any(|t| !t.record.restrictions.is_unrestricted())
    {
        FORMAT_VERSION
    } else if tokens
        .iter()
        .any(|t| t.record.owner.is_some() || t.record.description.is_some())
    {
        FORMAT_VERSION_WITH_PURPOSE
    } else {
        FORMAT_VERSION_WITHOUT_PURPOSE
    };
    let mut out = format!(
        "{MAGIC} {version} {}\n",
        crate::domain::time::format_rfc3339(now)
    )
    .into_bytes();
    let mut summary = BackupSummary::default();
    let push = |line: &Line, out: &mut Vec<u8>| -> Result<()> {
        serde_json::to_writer(&mut *out, line).map_err(|e| Error::Internal(e.to_string()))?;
        out.push(b'\n');
        Ok(())
    };
    for t in tokens {
        push(
            &Line::Token {
                hash: t.hash.to_hex(),
                id: t.record.id.to_string(),
                name: t.record.name,
                created_micros: t.record.created_micros,
                expires_at: t.record.expires_at,
                last_used: t.last_used,
                owner: t.record.owner,
                description: t.record.description,
                allowed_cidrs: t.record.restrictions.networks.to_strings(),
                access: (t.record.restrictions.access != Access::Full)
                    .then(|| t.record.restrictions.access.as_str().to_owned()),
            },
            &mut out,
        )?;
        summary.tokens += 1;
        progress.advance(1);
    }
    for (username, account) in admins {
        push(&Line::Admin { username, account }, &mut out)?;
        summary.admins += 1;
        progress.advance(1);
    }
    for (key, event) in audit {
        push(
            &Line::Audit {
                key: hex(&key),
                event,
            },
            &mut out,
        )?;
        summary.audit_events += 1;
        progress.advance(1);
    }
    let checksum = blake3::hash(&out).to_hex();
    out.extend_from_slice(format!("{CHECKSUM_PREFIX}{checksum}\n").as_bytes());
    progress.finish();
    Ok((out, summary))
}

/// A verified, parsed backup, ready to restore.
pub struct BackupContents {
    tokens: Vec<(TokenHash, TokenRecord, Option<i64>)>,
    admins: Vec<(String, AdminAccount)>,
    audit: Vec<([u8; 16], AuditEvent)>,
}

impl BackupContents {
    pub fn summary(&self) -> BackupSummary {
        BackupSummary {
            tokens: self.tokens.len(),
            admins: self.admins.len(),
            audit_events: self.audit.len(),
        }
    }
}

fn damaged(why: &str) -> Error {
    Error::Config(format!(
        "backup file is damaged or not a pa-auth backup: {why}; nothing was changed"
    ))
}

/// Checks magic, version and checksum, then parses every record.
pub fn read_backup(bytes: &[u8]) -> Result<BackupContents> {
    let body_end = bytes
        .strip_suffix(b"\n")
        .and_then(|b| b.iter().rposition(|&c| c == b'\n'))
        .map(|i| i + 1)
        .ok_or_else(|| damaged("no checksum line"))?;
    let (body, trailer) = bytes.split_at(body_end);
    let trailer = std::str::from_utf8(trailer).map_err(|_| damaged("checksum line is not text"))?;
    let expected = trailer
        .trim_end()
        .strip_prefix(CHECKSUM_PREFIX)
        .ok_or_else(|| damaged("no checksum line"))?;
    if blake3::hash(body).to_hex().as_str() != expected {
        return Err(damaged("checksum mismatch (truncated or modified)"));
    }
    let text = std::str::from_utf8(body).map_err(|_| damaged("not UTF-8"))?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let mut parts = header.split(' ');
    if parts.next() != Some(MAGIC) {
        return Err(damaged("missing header"));
    }
    let version = match parts.next().and_then(|v| v.parse::<u32>().ok()) {
        Some(
            v @ (FORMAT_VERSION | FORMAT_VERSION_WITH_PURPOSE | FORMAT_VERSION_WITHOUT_PURPOSE),
        ) => v,
        Some(v) => {
            return Err(Error::Config(format!(
            "backup format version {v} is not supported by this pa-auth (reads {FORMAT_VERSION})"
        )))
        }
        None => return Err(damaged("bad header")),
    };
    let written = parts
        .next()
        .and_then(crate::domain::time::parse_rfc3339_micros);
    if written.is_none() || parts.next().is_some() {
        return Err(damaged("bad header"));
    }
    let mut contents = BackupContents {
        tokens: Vec::new(),
        admins: Vec::new(),
        audit: Vec::new(),
    };
    for (n, line) in lines.enumerate() {
        if line.len() > MAX_RECORD_BYTES {
            return Err(damaged(&format!(
                "record {} is over {MAX_RECORD_BYTES} bytes",
                n + 1
            )));
        }
        let parsed: Line =
            serde_json::from_str(line).map_err(|e| damaged(&format!("record {}: {e}", n + 1)))?;
        match parsed {
            Line::Token {
                hash,
                id,
                name,
                created_micros,
                expires_at,
                last_used,
                owner,
                description,
                allowed_cidrs,
                access,
            } => {
                let hash = TokenHash::from_hex(&hash).ok_or_else(|| damaged("token hash"))?;
                let id = TokenId::parse(&id).ok_or_else(|| damaged("token id"))?;
                let restrictions = Restrictions {
                    access: match access.as_deref() {
                        None => Access::Full,
                        Some(a) => Access::parse(a).ok_or_else(|| damaged("token access"))?,
                    },
                    networks: validate_allowed_cidrs(&allowed_cidrs)
                        .map_err(|_| damaged("token allowedCidrs"))?,
                };
                contents.tokens.push((
                    hash,
                    TokenRecord {
                        id,
                        name,
                        created_micros,
                        expires_at,
                        owner,
                        description,
                        restrictions,
                    },
                    last_used,
                ));
            }
            Line::Admin { username, account } => contents.admins.push((username, account)),
            Line::Audit { key, event } => {
                let key =
                    crate::store::parse_audit_cursor(&key).ok_or_else(|| damaged("audit key"))?;
                contents.audit.push((key, event));
            }
        }
    }
    check_rules(&mut contents, version, crate::domain::time::now_unix())?;
    Ok(contents)
}

/// Longest record line: what pa-auth writes stays under 10 KiB (a token with 100 allowed
/// networks); a longer one is refused before it is parsed (a forged 300 MB line took as much
/// again to parse).
const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Longest text field of a restored audit event, in bytes (what pa-auth writes stays far
/// below: names are 100 characters, a failed login's username 100).
const MAX_AUDIT_TEXT: usize = 4096;

/// The latest second any stored time may name: 9999-12-31T23:59:59Z.
const LAST_SECOND: i64 = 253_402_300_799;

fn refused(what: &str, why: &str) -> Error {
    Error::Config(format!(
        "backup holds {what} that pa-auth does not accept: {why}; nothing was changed"
    ))
}

/// The checksum proves a file is whole, not who wrote it: anyone who can edit a backup can
/// recompute it. So a restore holds every record to the rules the API holds new data to,
/// where breaking them would break the store: ids, secret hashes and names (ignoring case)
/// unique (two records with one hash brought a deleted token back at the next start), names,
/// owners and descriptions as create and PATCH accept them, times within years 1970–9999,
/// fields the header's version does not have absent, admin names as every release has
/// accepted them (1..64 bytes, no control characters, no API token) and only once, admin
/// hashes this server can check, and audit events with a key of their own (their id, if
/// any), a time from 1970 to tomorrow in key and `at`, an `area.action` name and text
/// fields of at most 4 KiB, any API token in them redacted (as every audit write does).
fn check_rules(contents: &mut BackupContents, version: u32, now: i64) -> Result<()> {
    use crate::domain::token_fields::{
        contains_token, fold_name, validate_description, validate_name, validate_owner,
    };
    use std::collections::HashSet;
    let latest_micros = now.saturating_add(86_400).saturating_mul(1_000_000);
    let (mut ids, mut hashes, mut names) = (HashSet::new(), HashSet::new(), HashSet::new());
    let in_range = |t: i64| (0..=LAST_SECOND).contains(&t);
    for (hash, record, last_used) in &contents.tokens {
        let what = format!("token {}", record.id);
        let field = |e: crate::domain::token_fields::FieldError| refused(&what, &e.message);
        if validate_name(&record.name).map_err(field)? != record.name {
            return Err(refused(&what, "a name with surrounding spaces"));
        }
        if let Some(owner) = &record.owner {
            if validate_owner(owner).map_err(field)?.as_ref() != Some(owner) {
                return Err(refused(&what, "an empty or untrimmed owner"));
            }
        }
        if let Some(description) = &record.description {
            if validate_description(description).map_err(field)?.as_ref() != Some(description) {
                return Err(refused(&what, "an empty or untrimmed description"));
            }
        }
        let times = [
            Some(record.created_micros.div_euclid(1_000_000)),
            record.expires_at,
            *last_used,
        ];
        if times.into_iter().flatten().any(|t| !in_range(t)) {
            return Err(refused(&what, "a time before 1970 or after 9999"));
        }
        // A creation time in the future would keep it out of createdBefore, unusedForDays
        // and the unused-token webhook.
        if record.created_micros > latest_micros {
            return Err(refused(&what, "a creation time after tomorrow"));
        }
        if version < FORMAT_VERSION_WITH_PURPOSE
            && (record.owner.is_some() || record.description.is_some())
            || version < FORMAT_VERSION && !record.restrictions.is_unrestricted()
        {
            return Err(refused(
                &what,
                &format!("fields format version {version} does not have"),
            ));
        }
        if !ids.insert(record.id) {
            return Err(refused(&what, "a second token with the same id"));
        }
        if !hashes.insert(*hash) {
            return Err(refused(&what, "a second token with the same secret"));
        }
        if !names.insert(fold_name(&record.name)) {
            return Err(refused(
                &what,
                "a second token with the same name (ignoring case)",
            ));
        }
    }
    let mut usernames = HashSet::new();
    for (username, account) in &contents.admins {
        let what = "an admin account";
        if username.is_empty()
            || username.len() > 64
            || username.chars().any(char::is_control)
            || contains_token(username)
        {
            return Err(refused(
                what,
                "a name that is not 1..64 bytes without control characters or an API token",
            ));
        }
        if !usernames.insert(username.as_str()) {
            return Err(refused(what, "a second account with the same name"));
        }
        crate::service::admins::passwords::check_stored_hash(&account.password_hash).map_err(
            |why| {
                refused(
                    what,
                    &format!("a password hash that cannot be checked ({why})"),
                )
            },
        )?;
        if ![account.created_at, account.password_changed_at]
            .into_iter()
            .all(in_range)
        {
            return Err(refused(what, "a time before 1970 or after 9999"));
        }
    }
    let mut keys = HashSet::new();
    for (key, event) in &mut contents.audit {
        let what = format!("audit event {}", hex(key));
        // The key orders the log (newest first) and ages it out: a key from the far future
        // would head the list for good. Read unsigned: a high bit is no earlier time.
        let key_micros = u64::from_be_bytes(key[..8].try_into().unwrap_or_default());
        let at = crate::domain::time::parse_rfc3339_micros(&event.at);
        if u64::try_from(latest_micros).is_ok_and(|latest| key_micros > latest)
            || !at.is_some_and(|at| (0..=latest_micros).contains(&at))
        {
            return Err(refused(&what, "a time before 1970 or after tomorrow"));
        }
        if !(event.id.is_empty() || event.id == hex(key)) {
            return Err(refused(&what, "an id other than its key"));
        }
        if !keys.insert(*key) {
            return Err(refused(&what, "a second event with the same key"));
        }
        let kind = event.event.split_once('.');
        let word =
            |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !kind.is_some_and(|(a, b)| word(a) && word(b)) {
            return Err(refused(&what, "an event name that is not area.action"));
        }
        let texts = [
            &event.actor,
            &event.token_name,
            &event.reason,
            &event.remote_addr,
        ];
        if texts
            .into_iter()
            .flatten()
            .any(|t| t.len() > MAX_AUDIT_TEXT)
        {
            return Err(refused(
                &what,
                &format!("a text field over {MAX_AUDIT_TEXT} bytes"),
            ));
        }
        for text in [
            &mut event.actor,
            &mut event.token_name,
            &mut event.reason,
            &mut event.remote_addr,
        ]
        .into_iter()
        .flatten()
        {
            if let std::borrow::Cow::Owned(clean) = crate::domain::redact::redact_secrets(text) {
                *text = clean;
            }
        }
    }
    Ok(())
}

/// Writes a verified backup into an empty store, then flushes.
pub fn restore(store: &dyn Store, contents: BackupContents) -> Result<BackupSummary> {
    let summary = contents.summary();
    let records: Vec<(TokenHash, TokenRecord)> = contents
        .tokens
        .iter()
        .map(|(h, r, _)| (*h, r.clone()))
        .collect();
    let last_used: Vec<(TokenId, i64)> = contents
        .tokens
        .iter()
        .filter_map(|(_, r, lu)| lu.map(|t| (r.id, t)))
        .collect();
    let mut progress = Progress::start(
        "restoring",
        Some(
            (records.len() + last_used.len() + contents.admins.len() + contents.audit.len()) as u64,
        ),
    );
    for chunk in records.chunks(RESTORE_CHUNK) {
        store.import_tokens(chunk)?;
        progress.advance(chunk.len() as u64);
    }
    for chunk in last_used.chunks(RESTORE_CHUNK) {
        store.import_last_used(chunk)?;
        progress.advance(chunk.len() as u64);
    }
    for (username, account) in &contents.admins {
        store.put_admin(username, account)?;
        progress.advance(1);
    }
    for chunk in contents.audit.chunks(RESTORE_CHUNK) {
        store.import_audit(chunk)?;
        progress.advance(chunk.len() as u64);
    }
    store.flush()?;
    progress.finish();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::TempStore;

    #[test]
    fn round_trip_and_tamper_detection() {
        let a = TempStore::new();
        let (secret, rec) = a.create_token("kept", Some(4_000_000_000), 1).unwrap();
        let (_, gone) = a.create_token("gone", None, 2).unwrap();
        a.delete_token(gone.id).unwrap();
        a.import_last_used(&[(rec.id, 77)]).unwrap();
        for (at, event) in [(5, "token.created"), (6, "auth.failed")] {
            let event = AuditEvent {
                event: event.into(),
                ..Default::default()
            };
            a.append_audit(at, event).unwrap();
        }
        let (bytes, summary) = write_backup(&*a, 100).unwrap();
        assert_eq!(
            summary,
            BackupSummary {
                tokens: 1,
                admins: 0,
                audit_events: 2
            }
        );
        assert!(!String::from_utf8_lossy(&bytes).contains(secret.expose_secret()));

        let b = TempStore::new();
        restore(&*b, read_backup(&bytes).unwrap()).unwrap();
        assert_eq!(b.lookup_token(&secret.hash()).unwrap().unwrap().id, rec.id);
        assert!(b.token_by_id(gone.id).unwrap().is_none());
        assert_eq!(b.stored_last_used(rec.id).unwrap(), Some(77));
        assert_eq!(b.token_count().unwrap(), 1);
        assert_eq!(b.export_audit().unwrap(), a.export_audit().unwrap());

        let mut tampered = bytes.clone();
        let i = tampered.len() / 2;
        tampered[i] ^= 1;
        assert!(read_backup(&tampered).is_err());
        assert!(read_backup(&bytes[..bytes.len() - 10]).is_err());
        assert!(read_backup(b"").is_err());
        assert!(read_backup(b"hello\nBLAKE3 00\n").is_err());
    }

    /// A restore larger than one chunk imports chunk by chunk and ends with every token,
    /// last-used time and audit event, counted once.
    #[test]
    fn a_restore_of_several_chunks_loses_and_doubles_nothing() {
        let a = TempStore::new();
        let n = RESTORE_CHUNK * 2 + 17;
        let tokens: Vec<(TokenHash, TokenRecord)> = (0..n)
            .map(|i| {
                let record = TokenRecord {
                    id: TokenId::generate(),
                    name: format!("t{i}"),
                    created_micros: 1_000 + i as i64,
                    expires_at: None,
                    owner: None,
                    description: None,
                    restrictions: Default::default(),
                };
                (
                    crate::domain::token::PlaintextToken::generate().hash(),
                    record,
                )
            })
            .collect();
        a.import_tokens(&tokens).unwrap();
        let times: Vec<(TokenId, i64)> = tokens.iter().map(|(_, r)| (r.id, 77)).collect();
        a.import_last_used(&times).unwrap();
        let (bytes, written) = write_backup(&*a, 100).unwrap();
        let b = TempStore::new();
        let restored = restore(&*b, read_backup(&bytes).unwrap()).unwrap();
        assert_eq!((restored, written.tokens), (written, n));
        assert_eq!(b.token_count().unwrap(), n as u64);
        let (hash, last) = &tokens[n - 1];
        assert_eq!(b.lookup_token(hash).unwrap().unwrap().id, last.id);
        assert_eq!(b.stored_last_used(last.id).unwrap(), Some(77));
        let (again, _) = write_backup(&*b, 100).unwrap();
        assert_eq!(read_backup(&again).unwrap().summary(), written);
    }

    /// Owners and descriptions survive a backup and restore; a backup without any is still
    /// written as version 1 (what older releases read), and a version 1 token line without
    /// the fields restores as a token without them.
    #[test]
    fn owners_and_descriptions_round_trip_and_old_backups_restore() {
        let a = TempStore::new();
        let (_, plain) = a.create_token("plain", None, 1).unwrap();
        let (bytes, _) = write_backup(&*a, 100).unwrap();
        assert!(bytes.starts_with(b"PA-AUTH-BACKUP 1 "));
        assert!(!String::from_utf8_lossy(&bytes).contains("owner"));

        let (_, owned) = a
            .create_token_with(
                "owned",
                None,
                Some("team-a"),
                Some("line one\nline two"),
                &Default::default(),
                2,
            )
            .unwrap();
        let (bytes, _) = write_backup(&*a, 100).unwrap();
        assert!(bytes.starts_with(b"PA-AUTH-BACKUP 2 "));
        let b = TempStore::new();
        restore(&*b, read_backup(&bytes).unwrap()).unwrap();
        let restored = b.token_by_id(owned.id).unwrap().unwrap();
        assert_eq!(restored, owned);
        assert_eq!(b.token_by_id(plain.id).unwrap().unwrap(), plain);

        let id = TokenId::generate();
        let body = format!(
            "PA-AUTH-BACKUP 1 2026-11-30T09:00:00Z\n{{\"type\":\"token\",\"hash\":\"{}\",\"id\":\"{id}\",\"name\":\"old\",\"createdMicros\":5,\"expiresAt\":null,\"lastUsed\":null}}\n",
            crate::domain::token::PlaintextToken::generate().hash().to_hex()
        );
        let old = format!("{body}BLAKE3 {}\n", blake3::hash(body.as_bytes()).to_hex());
        let c = TempStore::new();
        restore(&*c, read_backup(old.as_bytes()).unwrap()).unwrap();
        let record = c.token_by_id(id).unwrap().unwrap();
        assert_eq!((record.owner, record.description), (None, None));
    }

    /// Signs `lines` under `header` the way write_backup does: what anyone who can edit a
    /// backup can do.
    fn forged(header: &str, lines: &[String]) -> Vec<u8> {
        let mut body = format!("{header}\n");
        for line in lines {
            body.push_str(line);
            body.push('\n');
        }
        format!("{body}BLAKE3 {}\n", blake3::hash(body.as_bytes()).to_hex()).into_bytes()
    }

    fn token_line(hash: &TokenHash, id: &TokenId, name: &str, extra: &str) -> String {
        format!(
            "{{\"type\":\"token\",\"hash\":\"{}\",\"id\":\"{id}\",\"name\":{},\"createdMicros\":5,\"expiresAt\":null,\"lastUsed\":null{extra}}}",
            hash.to_hex(),
            serde_json::to_string(name).unwrap()
        )
    }

    /// Outside attack: a forged backup with two records for one secret restored, and the
    /// token came back after its delete at the next start. Every record is held to the
    /// API's rules; a file breaking any of them is refused whole, naming the rule.
    #[test]
    fn a_forged_backup_breaking_the_rules_is_refused_whole() {
        let v1 = "PA-AUTH-BACKUP 1 2026-11-30T09:00:00Z";
        let v3 = "PA-AUTH-BACKUP 3 2026-11-30T09:00:00Z";
        let gen = || crate::domain::token::PlaintextToken::generate().hash();
        let (h1, h2, id1, id2) = (gen(), gen(), TokenId::generate(), TokenId::generate());
        let good = token_line(&h1, &id1, "one", "");
        assert!(read_backup(&forged(
            v1,
            &[good.clone(), token_line(&h2, &id2, "two", "")]
        ))
        .is_ok());
        let secret = crate::domain::token::PlaintextToken::generate();
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Jz4XvJ8mCCVcsgZd6bUmXn4Ac1gJ6RRvM7RUTJG3zVg";
        let admin = |name: &str, hash: &str| {
            format!(
                "{{\"type\":\"admin\",\"username\":{},\"account\":{{\"passwordHash\":\"{hash}\",\"initialPassword\":false,\"createdAt\":1,\"passwordChangedAt\":1}}}}",
                serde_json::to_string(name).unwrap()
            )
        };
        assert!(read_backup(&forged(v1, &[admin("admin", hash)])).is_ok());
        let cases: Vec<(&str, Vec<String>, &str)> = vec![
            (
                "same secret",
                vec![good.clone(), token_line(&h1, &id2, "two", "")],
                "same secret",
            ),
            (
                "same id",
                vec![good.clone(), token_line(&h2, &id1, "two", "")],
                "same id",
            ),
            (
                "same name",
                vec![good.clone(), token_line(&h2, &id2, "ONE", "")],
                "same name",
            ),
            (
                "empty name",
                vec![token_line(&h1, &id1, "", "")],
                "Name is required",
            ),
            (
                "long name",
                vec![token_line(&h1, &id1, &"x".repeat(101), "")],
                "at most 100",
            ),
            (
                "escape",
                vec![token_line(&h1, &id1, "a\u{1b}]0;x\u{7}", "")],
                "control",
            ),
            (
                "spaces",
                vec![token_line(&h1, &id1, " one", "")],
                "surrounding spaces",
            ),
            (
                "owner in v1",
                vec![token_line(&h1, &id1, "one", ",\"owner\":\"ops\"")],
                "format version 1",
            ),
            (
                "owner escape",
                vec![token_line(&h1, &id1, "one", ",\"owner\":\"\\u001b[2J\"")],
                "control",
            ),
            (
                "secret in description",
                vec![token_line(
                    &h1,
                    &id1,
                    "one",
                    &format!(",\"description\":\"was {}\"", secret.expose_secret()),
                )],
                "API token",
            ),
            (
                "far future",
                vec![good.replace(
                    "\"createdMicros\":5",
                    "\"createdMicros\":9223372036854775807",
                )],
                "after 9999",
            ),
            (
                "negative",
                vec![good.replace("\"createdMicros\":5", "\"createdMicros\":-5")],
                "before 1970",
            ),
            (
                "last used",
                vec![good.replace("\"lastUsed\":null", "\"lastUsed\":4611686018427387904")],
                "after 9999",
            ),
            (
                "two admins",
                vec![admin("admin", hash), admin("admin", hash)],
                "same name",
            ),
            ("admin escape", vec![admin("ad\u{1b}min", hash)], "control"),
            (
                "admin token",
                vec![admin(secret.expose_secret(), hash)],
                "API token",
            ),
            (
                "garbage hash",
                vec![admin("admin", "garbage")],
                "cannot be checked",
            ),
            (
                "huge hash",
                vec![admin("admin", &hash.replace("m=19456", "m=262144"))],
                "cannot be checked",
            ),
        ];
        for (case, lines, why) in cases {
            let header = if case == "owner in v1" { v1 } else { v3 };
            match read_backup(&forged(header, &lines)) {
                Ok(_) => panic!("{case}: restored"),
                Err(e) => {
                    let text = e.to_string();
                    assert!(
                        text.contains(why) && text.contains("nothing was changed"),
                        "{case}: {text}"
                    );
                    assert!(!text.contains(secret.expose_secret()), "{case}: {text}");
                }
            }
        }
        // One record far longer than anything pa-auth writes.
        let huge = token_line(&h1, &id1, &"x".repeat(70_000), "");
        let e = read_backup(&forged(v3, &[huge])).err().unwrap();
        assert!(e.to_string().contains("over 65536 bytes"), "{e}");
        // Junk in the header line.
        for header in [
            "PA-AUTH-BACKUP 1",
            "PA-AUTH-BACKUP 1 2026-11-30T09:00:00Z junk",
            "PA-AUTH-BACKUP 1 yesterday",
        ] {
            assert!(
                read_backup(&forged(header, std::slice::from_ref(&good))).is_err(),
                "{header}"
            );
        }
        // Audit events: a secret in one is redacted as every audit write does; one dated
        // after tomorrow is refused.
        let audit = |micros: u64, name: &str| {
            format!(
                "{{\"type\":\"audit\",\"key\":\"{micros:016x}0000000000000001\",\"event\":{{\"id\":\"{micros:016x}0000000000000001\",\"at\":\"1970-01-01T00:00:10Z\",\"event\":\"token.created\",\"tokenName\":\"{name}\"}}}}"
            )
        };
        let contents = read_backup(&forged(
            v1,
            &[audit(10_000_000, &format!("x {}", secret.expose_secret()))],
        ))
        .unwrap();
        let name = contents.audit[0].1.token_name.clone().unwrap();
        assert!(
            name.starts_with("x ") && !name.contains(secret.expose_secret()),
            "{name}"
        );
        let e = read_backup(&forged(v1, &[audit(4_070_908_800_000_000, "late")]))
            .err()
            .unwrap();
        assert!(e.to_string().contains("after tomorrow"), "{e}");
        // Seventh outside attack: audit records and times the first fix still let through.
        let ok = audit(10_000_000, "n");
        let audit_cases: Vec<(&str, Vec<String>, &str)> = vec![
            (
                "top key",
                vec![ok.replace("0000000000989680", "ffffffffffffffff")],
                "after tomorrow",
            ),
            (
                "1969",
                vec![ok.replace("1970-01-01T00:00:10Z", "1969-01-01T00:00:00Z")],
                "before 1970",
            ),
            (
                "bad at",
                vec![ok.replace("1970-01-01T00:00:10Z", "yesterday")],
                "before 1970",
            ),
            (
                "id",
                vec![ok.replace("\"id\":\"0000000000989680", "\"id\":\"0000000000989681")],
                "other than its key",
            ),
            ("twice", vec![ok.clone(), ok.clone()], "same key"),
            (
                "kind",
                vec![ok.replace("token.created", "Made Up")],
                "area.action",
            ),
            (
                "long",
                vec![audit(10_000_000, &"r".repeat(5000))],
                "over 4096 bytes",
            ),
            (
                "future token",
                vec![good.replace(
                    "\"createdMicros\":5",
                    "\"createdMicros\":253402300000000000",
                )],
                "after tomorrow",
            ),
        ];
        for (case, lines, why) in audit_cases {
            let e = read_backup(&forged(v1, &lines))
                .err()
                .unwrap_or_else(|| panic!("{case}: restored"));
            assert!(e.to_string().contains(why), "{case}: {e}");
        }
        assert!(read_backup(&forged(v1, &[ok])).is_ok());
    }

    /// A backup written before the audit log had two trees (same format, every event in
    /// one list) restores, each event into the tree of its kind, and pages as before.
    #[test]
    fn a_backup_from_before_the_split_restores() {
        let mut body = String::from("PA-AUTH-BACKUP 1 2026-11-30T09:00:00Z\n");
        let events = [
            ("0000000000989680", "0000000000000001", "token.created"),
            ("0000000000989680", "0000000000000002", "auth.failed"),
            ("0000000001312d00", "0000000000000003", "admin.login_failed"),
            ("0000000001312d00", "0000000000000004", "token.deleted"),
        ];
        for (micros, id, event) in events {
            body.push_str(&format!(
                "{{\"type\":\"audit\",\"key\":\"{micros}{id}\",\"event\":{{\"id\":\"{micros}{id}\",\"at\":\"1970-01-01T00:00:10Z\",\"event\":\"{event}\"}}}}\n"
            ));
        }
        let bytes = format!("{body}BLAKE3 {}\n", blake3::hash(body.as_bytes()).to_hex());
        let store = TempStore::new();
        let summary = restore(&*store, read_backup(bytes.as_bytes()).unwrap()).unwrap();
        assert_eq!(summary.audit_events, 4);
        let query = |before| crate::store::AuditQuery {
            limit: 2,
            before,
            ..Default::default()
        };
        let (page, next) = store.audit_events(&query(None)).unwrap();
        let (rest, last) = store
            .audit_events(&query(crate::store::parse_audit_cursor(&next.unwrap())))
            .unwrap();
        let names: Vec<_> = page.iter().chain(&rest).map(|e| e.event.as_str()).collect();
        assert_eq!(
            names,
            [
                "token.deleted",
                "admin.login_failed",
                "auth.failed",
                "token.created"
            ]
        );
        assert!(last.is_none());
        // And a new backup holds all of them again.
        let (again, _) = write_backup(&*store, 200).unwrap();
        assert_eq!(read_backup(&again).unwrap().summary().audit_events, 4);
    }
}
