//! The token, admin and backup commands: each builds the admin API request it stands for,
//! sends it through a [`client::Endpoint`] (the control socket, or the handlers in-process on
//! the data dir) and prints the answer: a readable table or line by default, the answer's JSON
//! with `--json`. Flags are checked here only for how they combine; every field is validated
//! by the handler, and its errors name the flag.

use std::io::{BufRead, Write};

use serde_json::{json, Map, Value};

use super::client::{Answer, Endpoint, Target};
use super::{
    BackupCommand, SetPassword, TokenBulkDelete, TokenCreate, TokenDelete, TokenGet, TokenList,
    TokenRevoke, TokenRotate, TokenUpdateCommand, TokenUsage,
};
use crate::domain::token::TokenId;
use crate::service::error::{Error, Result};

/// The flag a field of the admin API is given with.
fn flag_of(field: &str) -> String {
    let field = field.split('[').next().unwrap_or(field);
    match field {
        "expiresAt" => "--expires".into(),
        "allowedCidrs" => "--allowed-cidr".into(),
        "maxOverlap" => "--max-overlap".into(),
        "createdBefore" => "--created-before".into(),
        "unusedForDays" => "--unused-for-days".into(),
        "neverUsed" => "--never-used".into(),
        "namePrefix" => "--name-prefix".into(),
        "confirmCount" => "--confirm-count".into(),
        "confirmSelection" => "--confirm-selection".into(),
        "dryRun" => "--dry-run".into(),
        "tokens" => "stdin".into(),
        "password" => "password on stdin".into(),
        other => format!("--{other}"),
    }
}

/// The answer if its status is one of `ok`; otherwise the error it carries, as the command
/// line says it: a refused field names its flag (exit 2), anything else exits 1.
fn expect(answer: Answer, ok: &[u16], not_found: impl FnOnce() -> String) -> Result<Answer> {
    if ok.contains(&answer.status) {
        return Ok(answer);
    }
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    let message = body["message"].as_str().unwrap_or("no message").to_owned();
    let errors: Vec<String> = body["errors"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        flag_of(e["field"].as_str().unwrap_or("")),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Err(match answer.status {
        400 if !errors.is_empty() => Error::Config(errors.join("; ")),
        400 => Error::Config(message),
        404 => Error::Failed(not_found()),
        403 | 409 => Error::Failed(message),
        status => Error::Failed(format!(
            "{message} (HTTP {status}, correlation id {})",
            body["correlationId"].as_str().unwrap_or("-")
        )),
    })
}

fn token_id(raw: &str) -> Result<TokenId> {
    TokenId::parse(raw).ok_or_else(|| Error::Config(format!("not a token id: {raw:?}")))
}

fn no_token(id: TokenId) -> impl FnOnce() -> String {
    move || format!("no token with id {id}")
}

fn print_json(value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

fn text<'v>(value: &'v Value, field: &str) -> &'v str {
    value[field].as_str().unwrap_or("")
}

/// `--allowed-cidr` (repeated), `--allow-anywhere` and `--access` into a request body.
fn restriction_fields(
    body: &mut Map<String, Value>,
    cidrs: &[String],
    anywhere: bool,
    access: Option<&str>,
) -> Result<()> {
    match (cidrs.is_empty(), anywhere) {
        (false, true) => {
            return Err(Error::Config(
                "give --allowed-cidr or --allow-anywhere, not both".into(),
            ))
        }
        (true, true) => {
            body.insert("allowedCidrs".into(), Value::Null);
        }
        (false, false) => {
            body.insert("allowedCidrs".into(), json!(cidrs));
        }
        (true, false) => {}
    }
    if let Some(access) = access {
        body.insert("access".into(), json!(access));
    }
    Ok(())
}

pub(super) fn token_create(c: &TokenCreate) -> Result<()> {
    let mut body = Map::new();
    body.insert("name".into(), json!(c.name));
    for (field, value) in [
        ("expiresAt", &c.expires),
        ("owner", &c.owner),
        ("description", &c.description),
    ] {
        if let Some(v) = value {
            body.insert(field.into(), json!(v));
        }
    }
    restriction_fields(&mut body, &c.allowed_cidr, false, c.access.as_deref())?;
    let endpoint = Endpoint::open(&target(&c.data_dir, &c.socket), true)?;
    let answer = endpoint.call("POST", "/admin/api/tokens", Some(&Value::Object(body)))?;
    let created = expect(answer, &[201], String::new)?.json()?;
    endpoint.finish()?;
    if c.json {
        return print_json(&created);
    }
    eprintln!(
        "created token {} \"{}\" (expires {}); the secret below is shown once",
        text(&created, "id"),
        text(&created, "name").escape_debug(),
        created["expiresAt"].as_str().unwrap_or("never")
    );
    println!("{}", text(&created, "token"));
    Ok(())
}

/// Every token, newest first, page by page.
pub(super) fn token_list(l: &TokenList) -> Result<()> {
    let endpoint = Endpoint::open(&target(&l.data_dir, &l.socket), false)?;
    let mut progress =
        crate::progress::Progress::start("listing tokens", token_count(&endpoint)).unit("tokens");
    let mut views = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/api/tokens?limit=1000&cursor={c}"),
            None => "/admin/api/tokens?limit=1000".to_owned(),
        };
        let page = expect(endpoint.call("GET", &path, None)?, &[200], String::new)?.json()?;
        if let Some(items) = page["items"].as_array() {
            views.extend(items.iter().cloned());
            progress.advance(items.len() as u64);
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    progress.finish();
    if l.json {
        return print_json(&Value::Array(views));
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<36}  {:<24}  {:<24}  {:<20}  {:<20}  {:<20}  STATUS",
        "ID", "NAME", "OWNER", "CREATED", "EXPIRES", "LAST USED"
    )?;
    for v in &views {
        writeln!(
            out,
            "{:<36}  {:<24}  {:<24}  {:<20}  {:<20}  {:<20}  {}",
            text(v, "id"),
            text(v, "name").escape_debug().to_string(),
            v["owner"]
                .as_str()
                .unwrap_or("-")
                .escape_debug()
                .to_string(),
            text(v, "createdAt"),
            v["expiresAt"].as_str().unwrap_or("never"),
            v["lastUsedAt"].as_str().unwrap_or("never"),
            text(v, "status")
        )?;
    }
    Ok(())
}

/// How many tokens there are, for a long listing's progress: `/metrics`' count (at most 30 s
/// old), if it can be read.
fn token_count(endpoint: &Endpoint) -> Option<u64> {
    let answer = endpoint.call("GET", "/metrics", None).ok()?;
    let text = String::from_utf8(answer.body).ok()?;
    let counts: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("pa_auth_tokens{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

pub(super) fn token_get(g: &TokenGet) -> Result<()> {
    let id = token_id(&g.id)?;
    let endpoint = Endpoint::open(&target(&g.data_dir, &g.socket), false)?;
    let answer = endpoint.call("GET", &format!("/admin/api/tokens/{id}"), None)?;
    let view = expect(answer, &[200], no_token(id))?.json()?;
    if g.json {
        return print_json(&view);
    }
    let mut out = std::io::stdout().lock();
    let or = |field: &str, none: &'static str| view[field].as_str().unwrap_or(none).to_owned();
    let cidrs: Vec<&str> = view["allowedCidrs"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let rows = [
        ("id", or("id", "")),
        ("name", or("name", "").escape_debug().to_string()),
        ("owner", or("owner", "-").escape_debug().to_string()),
        (
            "description",
            or("description", "-").escape_debug().to_string(),
        ),
        ("created", or("createdAt", "")),
        ("expires", or("expiresAt", "never")),
        ("last used", or("lastUsedAt", "never")),
        ("status", or("status", "")),
        ("access", or("access", "full")),
        (
            "allowed networks",
            if cidrs.is_empty() {
                "anywhere".to_owned()
            } else {
                cidrs.join(", ")
            },
        ),
        (
            "previous secret",
            match view["previousSecret"].as_object() {
                None => "none".to_owned(),
                Some(p) => format!(
                    "works until {}; last used {}",
                    p.get("expiresAt").and_then(Value::as_str).unwrap_or("-"),
                    p.get("lastUsedAt")
                        .and_then(Value::as_str)
                        .unwrap_or("never")
                ),
            },
        ),
    ];
    for (label, value) in rows {
        writeln!(out, "{label:<17} {value}")?;
    }
    Ok(())
}

pub(super) fn token_update(u: &TokenUpdateCommand) -> Result<()> {
    let id = token_id(&u.id)?;
    let mut body = Map::new();
    if let Some(name) = &u.name {
        body.insert("name".into(), json!(name));
    }
    // An empty value removes the owner or description (`null` in the merge patch).
    for (field, value) in [("owner", &u.owner), ("description", &u.description)] {
        if let Some(v) = value {
            let v = if v.trim().is_empty() {
                Value::Null
            } else {
                json!(v)
            };
            body.insert(field.into(), v);
        }
    }
    restriction_fields(
        &mut body,
        &u.allowed_cidr,
        u.allow_anywhere,
        u.access.as_deref(),
    )?;
    if body.is_empty() {
        return Err(Error::Config(
            "nothing to change: give --name, --owner, --description, --allowed-cidr, \
             --allow-anywhere or --access"
                .into(),
        ));
    }
    let endpoint = Endpoint::open(&target(&u.data_dir, &u.socket), false)?;
    let path = format!("/admin/api/tokens/{id}");
    let before = expect(endpoint.call("GET", &path, None)?, &[200], no_token(id))?.json()?;
    let answer = endpoint.call("PATCH", &path, Some(&Value::Object(body)))?;
    let after = expect(answer, &[200], no_token(id))?.json()?;
    endpoint.finish()?;
    if u.json {
        return print_json(&after);
    }
    let changed: Vec<&str> = ["name", "owner", "description", "allowedCidrs", "access"]
        .into_iter()
        .filter(|f| before[*f] != after[*f])
        .collect();
    eprintln!(
        "updated token {id} \"{}\": {}",
        text(&after, "name").escape_debug(),
        if changed.is_empty() {
            "nothing changed".to_owned()
        } else {
            format!("changed {}", changed.join(", "))
        }
    );
    Ok(())
}

pub(super) fn token_rotate(r: &TokenRotate) -> Result<()> {
    let id = token_id(&r.id)?;
    let overlap = match (&r.overlap, r.until_new_secret_used) {
        (Some(_), true) => {
            return Err(Error::Config(
                "give --overlap or --until-new-secret-used, not both".into(),
            ))
        }
        (None, false) => {
            return Err(Error::Config(
                "give --overlap D (0 for none) or --until-new-secret-used".into(),
            ))
        }
        (Some(d), false) => d.clone(),
        (None, true) => "untilNewSecretUsed".to_owned(),
    };
    let mut body = Map::new();
    body.insert("overlap".into(), json!(overlap));
    if let Some(max) = &r.max_overlap {
        body.insert("maxOverlap".into(), json!(max));
    }
    restriction_fields(
        &mut body,
        &r.allowed_cidr,
        r.allow_anywhere,
        r.access.as_deref(),
    )?;
    let endpoint = Endpoint::open(&target(&r.data_dir, &r.socket), false)?;
    let answer = endpoint.call(
        "POST",
        &format!("/admin/api/tokens/{id}/rotate"),
        Some(&Value::Object(body)),
    )?;
    let rotated = expect(answer, &[201], no_token(id))?.json()?;
    endpoint.finish()?;
    eprintln!(
        "rotated token {id} \"{}\"; the old secret works until {}; the new secret below is \
         shown once",
        text(&rotated, "name").escape_debug(),
        match rotated["previousSecret"]["expiresAt"].as_str() {
            None => "now (no overlap)".to_owned(),
            Some(ends) if r.until_new_secret_used => {
                format!("{ends} or the new secret's first use")
            }
            Some(ends) => ends.to_owned(),
        }
    );
    if r.json {
        return print_json(&rotated);
    }
    println!("{}", text(&rotated, "token"));
    Ok(())
}

pub(super) fn token_delete(d: &TokenDelete) -> Result<()> {
    let id = token_id(&d.id)?;
    let endpoint = Endpoint::open(&target(&d.data_dir, &d.socket), false)?;
    let path = format!("/admin/api/tokens/{id}");
    let view = expect(endpoint.call("GET", &path, None)?, &[200], no_token(id))?.json()?;
    expect(endpoint.call("DELETE", &path, None)?, &[204], no_token(id))?;
    endpoint.finish()?;
    if d.json {
        return print_json(&json!({"id": id.to_string(), "name": view["name"], "deleted": true}));
    }
    eprintln!(
        "deleted token {id} \"{}\"",
        text(&view, "name").escape_debug()
    );
    Ok(())
}

pub(super) fn token_usage(u: &TokenUsage) -> Result<()> {
    let id = token_id(&u.id)?;
    let endpoint = Endpoint::open(&target(&u.data_dir, &u.socket), false)?;
    let answer = endpoint.call("GET", &format!("/admin/api/tokens/{id}/usage"), None)?;
    let view = expect(answer, &[200], no_token(id))?.json()?;
    if u.json {
        return print_json(&view);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} requests in the last 90 days (UTC)",
        view["total"].as_u64().unwrap_or(0)
    )?;
    for day in view["days"].as_array().into_iter().flatten() {
        let count = day["count"].as_u64().unwrap_or(0);
        if count > 0 {
            writeln!(out, "  {}  {count:>10}", text(day, "date"))?;
        }
    }
    let addresses = view["addresses"].as_array().cloned().unwrap_or_default();
    if addresses.is_empty() {
        writeln!(out, "no client addresses recorded")?;
        return Ok(());
    }
    writeln!(out, "last {} client address(es):", addresses.len())?;
    writeln!(
        out,
        "  {:<39}  {:<20}  {:<20}  {:>10}",
        "ADDRESS", "FIRST SEEN", "LAST SEEN", "COUNT"
    )?;
    for a in &addresses {
        writeln!(
            out,
            "  {:<39}  {:<20}  {:<20}  {:>10}",
            text(a, "address"),
            text(a, "firstSeen"),
            text(a, "lastSeen"),
            a["count"].as_u64().unwrap_or(0)
        )?;
    }
    Ok(())
}

pub(super) fn token_revoke(r: &TokenRevoke) -> Result<()> {
    use crate::domain::leak_response::MAX_PASTED;
    let mut values = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if values.len() == MAX_PASTED {
            return Err(Error::Config(format!(
                "more than {MAX_PASTED} values on stdin; split them"
            )));
        }
        values.push(line);
    }
    if values.is_empty() {
        return Err(Error::Config(
            "no values on stdin: give the leaked tokens, one a line".into(),
        ));
    }
    let endpoint = Endpoint::open(&target(&r.data_dir, &r.socket), false)?;
    let answer = endpoint.call(
        "POST",
        "/admin/api/tokens/revoke",
        Some(&json!({"tokens": values})),
    )?;
    let outcome = expect(answer, &[200], String::new)?.json()?;
    endpoint.finish()?;
    let named = |field: &str| outcome[field].as_array().cloned().unwrap_or_default();
    let (revoked, failed) = (named("revoked"), named("failed"));
    if r.json {
        print_json(&outcome)?;
    } else {
        let mut out = std::io::stdout().lock();
        for t in &revoked {
            writeln!(
                out,
                "revoked {} \"{}\"",
                text(t, "id"),
                text(t, "name").escape_debug()
            )?;
        }
        for t in &failed {
            writeln!(
                out,
                "FAILED {} \"{}\"",
                text(t, "id"),
                text(t, "name").escape_debug()
            )?;
        }
    }
    let count = |field: &str| outcome[field].as_u64().unwrap_or(0);
    eprintln!(
        "{} revoked, {} unknown, {} malformed, {} duplicate, {} failed",
        revoked.len(),
        count("unknown"),
        count("malformed"),
        count("duplicates"),
        failed.len()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Failed("some tokens could not be deleted".into()))
    }
}

pub(super) fn token_bulk_delete(b: &TokenBulkDelete) -> Result<()> {
    if b.dry_run && b.confirm_count.is_some() {
        return Err(Error::Config(
            "--dry-run and --confirm-count exclude each other".into(),
        ));
    }
    if b.confirm_selection.is_some() && b.confirm_count.is_none() {
        return Err(Error::Config(
            "--confirm-selection goes with --confirm-count".into(),
        ));
    }
    let mut body = Map::new();
    for (field, value) in [
        ("owner", &b.owner),
        ("createdBefore", &b.created_before),
        ("namePrefix", &b.name_prefix),
    ] {
        if let Some(v) = value {
            body.insert(field.into(), json!(v));
        }
    }
    if let Some(days) = b.unused_for_days {
        body.insert("unusedForDays".into(), json!(days));
    }
    if b.never_used {
        body.insert("neverUsed".into(), json!(true));
    }
    if b.all {
        body.insert("all".into(), json!(true));
    }
    body.insert("dryRun".into(), json!(b.confirm_count.is_none()));
    if let Some(count) = b.confirm_count {
        body.insert("confirmCount".into(), json!(count));
    }
    if let Some(selection) = &b.confirm_selection {
        body.insert("confirmSelection".into(), json!(selection));
    }
    let endpoint = Endpoint::open(&target(&b.data_dir, &b.socket), false)?;
    let answer = endpoint.call(
        "POST",
        "/admin/api/tokens/bulk-delete",
        Some(&Value::Object(body)),
    )?;
    let outcome = expect(answer, &[200], String::new)?.json()?;
    endpoint.finish()?;
    let count = outcome["count"].as_u64().unwrap_or(0);
    if b.json {
        print_json(&outcome)?;
    }
    let mut out = std::io::stdout().lock();
    if b.confirm_count.is_none() {
        let sample = outcome["sample"].as_array().cloned().unwrap_or_default();
        if !b.json {
            writeln!(out, "{count} tokens selected (dry run; nothing deleted)")?;
            for t in &sample {
                writeln!(out, "{} {}", text(t, "id"), text(t, "name").escape_debug())?;
            }
            if count > sample.len() as u64 {
                writeln!(out, "… and {} more", count - sample.len() as u64)?;
            }
        }
        eprintln!(
            "to delete them: the same filter with --confirm-count {count} --confirm-selection {}",
            text(&outcome, "selection")
        );
        return Ok(());
    }
    let failed = outcome["failed"].as_array().cloned().unwrap_or_default();
    if !b.json {
        writeln!(
            out,
            "{} tokens deleted",
            outcome["deleted"].as_u64().unwrap_or(0)
        )?;
        for t in &failed {
            writeln!(
                out,
                "FAILED {} \"{}\"",
                text(t, "id"),
                text(t, "name").escape_debug()
            )?;
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Failed("some tokens could not be deleted".into()))
    }
}

pub(super) fn set_password(p: &SetPassword) -> Result<()> {
    let password = password_from_stdin()?;
    let password = password.as_str();
    let endpoint = Endpoint::open(&target(&p.data_dir, &p.socket), true)?;
    let answer = endpoint.call(
        "PUT",
        "/admin/api/admins/password",
        Some(&json!({"username": p.username, "password": password})),
    )?;
    expect(answer, &[204], String::new)?;
    endpoint.finish()?;
    if p.json {
        return print_json(&json!({"username": p.username, "passwordSet": true}));
    }
    eprintln!("password set for admin {:?}", p.username);
    Ok(())
}

/// The password on stdin: one line (its line ending dropped), read up to the longest
/// password accepted and no further (outside attack: 300 MB piped in took 1.2 GB before the
/// server refused it). From a terminal, the first line; from a file or pipe, the whole input,
/// which must hold that one line and nothing else (a second line was silently dropped).
fn password_from_stdin() -> Result<String> {
    use crate::service::admins::passwords::MAX_PASSWORD_BYTES;
    use std::io::{IsTerminal, Read};
    let limit = MAX_PASSWORD_BYTES + 2; // and its line ending
    let stdin = std::io::stdin();
    let mut input = Vec::new();
    let mut bounded = stdin.lock().take(limit as u64 + 1);
    if stdin.is_terminal() {
        bounded.read_until(b'\n', &mut input)?;
    } else {
        bounded.read_to_end(&mut input)?;
    }
    if input.len() > limit {
        return Err(Error::Config(format!(
            "the password on stdin is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(input)
        .map_err(|_| Error::Config("the password on stdin is not UTF-8".into()))?;
    let mut lines = text.lines();
    let password = lines.next().unwrap_or_default().to_owned();
    if lines.any(|l| !l.is_empty()) {
        return Err(Error::Config(
            "stdin holds more than one line: give the password alone, on one line".into(),
        ));
    }
    Ok(password)
}

pub(super) fn backup(b: &BackupCommand) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let cannot_write = |e: std::io::Error| {
        Error::Config(format!(
            "cannot write the backup to {}: {e}",
            b.to.display()
        ))
    };
    let endpoint = Endpoint::open(&target(&b.data_dir, &b.socket), false)?;
    // The file is made (new, 0600) before the backup is asked for: the server audits a
    // backup it hands over, so one that could never be written is not asked for.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&b.to)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                Error::Config(format!("{} exists; choose a new file", b.to.display()))
            }
            _ => cannot_write(e),
        })?;
    let written = (|| {
        let answer = endpoint.call("GET", "/admin/api/backup", None)?;
        let bytes = expect(answer, &[200], String::new)?.body;
        endpoint.finish()?;
        // Checked as a restore would check it before it is kept.
        let summary = crate::service::backup::read_backup(&bytes)?.summary();
        file.write_all(&bytes).map_err(cannot_write)?;
        file.sync_all().map_err(cannot_write)?;
        Ok(summary)
    })();
    let summary = match written {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&b.to);
            return Err(e);
        }
    };
    if b.json {
        return print_json(&json!({
            "file": b.to.display().to_string(),
            "tokens": summary.tokens,
            "admins": summary.admins,
            "auditEvents": summary.audit_events,
        }));
    }
    eprintln!(
        "backup written to {}: {} tokens, {} admins, {} audit events",
        b.to.display(),
        summary.tokens,
        summary.admins,
        summary.audit_events
    );
    Ok(())
}

fn target<'a>(
    data_dir: &'a Option<std::path::PathBuf>,
    socket: &'a Option<std::path::PathBuf>,
) -> Target<'a> {
    Target {
        data_dir: data_dir.as_deref(),
        socket: socket.as_deref(),
    }
}
