//! Issue 20 part 2: long operations show count, rate and ETA; as log lines without a
//! terminal, as a line redrawn in place on one (under `script`, a pseudo-terminal). The
//! test-only `PA_AUTH_PROGRESS_INTERVAL_MS=1` makes a few-second restore report.

use std::path::Path;
use std::process::Command;

use pa_auth::domain::token::{PlaintextToken, TokenId};

use crate::support::{binary, run_cli, TempDir};

/// A verified backup file of `n` tokens, each with a last-used time (so a restore has
/// `2 n` entries), written the way `pa-auth backup` writes format 1.
fn backup_of(n: usize) -> String {
    let mut body = String::from("PA-AUTH-BACKUP 1 2026-11-30T09:00:00Z\n");
    for i in 0..n {
        body.push_str(&format!(
            "{{\"type\":\"token\",\"hash\":\"{}\",\"id\":\"{}\",\"name\":\"t{i}\",\
             \"createdMicros\":{},\"expiresAt\":null,\"lastUsed\":1800000000}}\n",
            PlaintextToken::generate().hash().to_hex(),
            TokenId::generate(),
            1_700_000_000_000_000i64 + i as i64
        ));
    }
    format!("{body}BLAKE3 {}\n", blake3::hash(body.as_bytes()).to_hex())
}

/// Runs the binary with the short interval, stderr not a terminal.
fn run_reporting(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary())
        .args(args)
        .env_remove("PA_AUTH_DATA_DIR")
        .env("PA_AUTH_PROGRESS_INTERVAL_MS", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The progress lines of `what` in a log, and its final line.
fn progress_lines<'a>(log: &'a str, what: &str) -> (Vec<&'a str>, Option<&'a str>) {
    let prefix = format!("{what}: ");
    let ours = |l: &&str| l.contains(&prefix);
    let figures = log
        .lines()
        .filter(ours)
        .filter(|l| l.contains(" entries (") && l.contains("/s, ETA "))
        .collect();
    let last = log
        .lines()
        .filter(ours)
        .find(|l| l.contains(" entries done in "));
    (figures, last)
}

#[test]
fn without_a_terminal_restore_backup_and_migrate_log_count_rate_and_eta() {
    const TOKENS: usize = 30_000;
    let temp = TempDir::new("progress-log");
    let file = temp.path().join("big.pab");
    std::fs::write(&file, backup_of(TOKENS)).unwrap();
    let data = temp.path().join("data");
    let (code, log) = run_reporting(&[
        "restore",
        "--from",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{log}");
    let (figures, last) = progress_lines(&log, "restoring");
    assert!(!figures.is_empty(), "no progress lines:\n{log}");
    let total = 2 * TOKENS;
    for line in &figures {
        assert!(line.contains("INFO"), "logged at info: {line}");
        assert!(line.contains(&format!("/{total} entries (")), "{line}");
    }
    let last = last.unwrap_or_else(|| panic!("no final line:\n{log}"));
    assert!(last.contains(&format!("restoring: {total} entries done in ")));
    assert!(log.contains(&format!("restored {TOKENS} tokens")), "{log}");
    assert!(!log.contains('\r'), "a redraw without a terminal:\n{log}");

    let copy = temp.path().join("copy.pab");
    let (code, log) = run_reporting(&[
        "backup",
        "--to",
        copy.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{log}");
    let (figures, last) = progress_lines(&log, "writing the backup");
    assert!(!figures.is_empty() && last.is_some(), "{log}");

    let moved = temp.path().join("moved");
    let (code, log) = run_reporting(&[
        "migrate",
        "--from-data-dir",
        data.to_str().unwrap(),
        "--to-data-dir",
        moved.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{log}");
    for what in ["writing the backup", "restoring"] {
        let (figures, last) = progress_lines(&log, what);
        assert!(!figures.is_empty() && last.is_some(), "{what}:\n{log}");
    }
}

/// At the normal interval (5 s) a short operation stays quiet.
#[test]
fn a_short_restore_reports_nothing() {
    let temp = TempDir::new("progress-quiet");
    let file = temp.path().join("small.pab");
    std::fs::write(&file, backup_of(10)).unwrap();
    let data = temp.path().join("data");
    let (code, _, err) = run_cli(
        &[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("restoring:"), "{err}");
    assert!(err.contains("restored 10 tokens"), "{err}");
}

/// `script` (util-linux) runs a command on a pseudo-terminal and copies what it wrote.
fn script_program() -> Option<&'static str> {
    let found = ["/usr/bin/script", "/bin/script"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if found.is_none() {
        let message = "\n!!! `script` is missing: install Debian package `bsdutils` (util-linux) \
                       to run the terminal progress test. SKIPPED.\n";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message} (CI=true: a missing program is a failure)");
        }
        eprintln!("{message}");
    }
    found
}

#[test]
fn on_a_terminal_a_restore_redraws_one_line_with_a_bar() {
    let Some(script) = script_program() else {
        return;
    };
    const TOKENS: usize = 20_000;
    let temp = TempDir::new("progress-tty");
    let file = temp.path().join("big.pab");
    std::fs::write(&file, backup_of(TOKENS)).unwrap();
    let data = temp.path().join("data");
    let command = format!(
        "{} restore --from {} --data-dir {}",
        binary(),
        file.display(),
        data.display()
    );
    let out = Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .env_remove("PA_AUTH_DATA_DIR")
        .env("PA_AUTH_PROGRESS_INTERVAL_MS", "1")
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{screen}");
    let total = 2 * TOKENS;
    // Redraws: a carriage return, the bar, the figures, erase to the end of the line.
    let redraws: Vec<&str> = screen
        .split('\r')
        .filter(|l| l.starts_with('[') && l.contains(&format!("/{total} entries (")))
        .collect();
    assert!(!redraws.is_empty(), "no bar redrawn:\n{screen:?}");
    for line in &redraws {
        assert!(line.contains("] restoring: "), "{line:?}");
        assert!(line.contains("/s, ETA "), "{line:?}");
        assert!(line.ends_with("\x1b[K"), "{line:?}");
    }
    assert!(
        screen.contains(&format!("\rrestoring: {total} entries done in ")),
        "the final line replaces the bar:\n{screen:?}"
    );
    assert!(
        !screen
            .lines()
            .any(|l| l.contains("INFO") && l.contains("restoring:")),
        "logged instead of drawn:\n{screen:?}"
    );
    assert!(
        screen.contains(&format!("restored {TOKENS} tokens")),
        "{screen:?}"
    );
}

/// A long listing reports too (issue 20 names an offline list over 100k tokens): page by
/// page, with the total from the store's count, and the same table afterwards.
#[test]
fn a_long_token_list_reports_count_rate_and_eta() {
    const TOKENS: usize = 5_000;
    let temp = TempDir::new("progress-list");
    let file = temp.path().join("list.pab");
    std::fs::write(&file, backup_of(TOKENS)).unwrap();
    let data = temp.path().join("data");
    let d = data.to_str().unwrap();
    let (code, _, err) = run_cli(
        &["restore", "--from", file.to_str().unwrap(), "--data-dir", d],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (code, log) = run_reporting(&["token", "list", "--json", "--data-dir", d]);
    assert_eq!(code, 0, "{log}");
    let figures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("listing tokens: ") && l.contains("/s, ETA "))
        .collect();
    assert!(!figures.is_empty(), "no progress lines:\n{log}");
    assert!(
        figures
            .iter()
            .all(|l| l.contains(&format!("/{TOKENS} tokens ("))),
        "{figures:?}"
    );
}
