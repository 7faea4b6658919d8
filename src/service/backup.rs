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
    match parts.next().and_then(|v| v.parse::<u32>().ok()) {
        Some(FORMAT_VERSION | FORMAT_VERSION_WITH_PURPOSE | FORMAT_VERSION_WITHOUT_PURPOSE) => {}
        Some(v) => {
            return Err(Error::Config(format!(
            "backup format version {v} is not supported by this pa-auth (reads {FORMAT_VERSION})"
        )))
        }
        None => return Err(damaged("bad header")),
    }
    let mut contents = BackupContents {
        tokens: Vec::new(),
        admins: Vec::new(),
        audit: Vec::new(),
    };
    for (n, line) in lines.enumerate() {
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
    Ok(contents)
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
