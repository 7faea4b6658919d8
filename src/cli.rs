//! The command line: argh definitions of every command and `run`, which dispatches them.
//! `serve` and `check-config` start or check the server; the token, admin and backup commands
//! ([`commands`]) reach the admin API's handlers through the running server's control socket,
//! or in-process on the data dir when no server holds it ([`client`]); `restore` and
//! `migrate` work on stopped stores only.

use std::path::{Path, PathBuf};

use argh::FromArgs;

mod client;
mod commands;

use crate::config::{Config, ServeArgs};
use crate::domain::time::now_unix;
use crate::service::error::{Error, Result};
use crate::store::sled::{SledStore, StoreOptions};

#[derive(FromArgs, Debug)]
/// pa-auth: the API token service of Permission Assist.
pub struct Cli {
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
    #[argh(subcommand)]
    pub command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Serve(ServeCommand),
    CheckConfig(CheckConfigCommand),
    Token(TokenCommand),
    Admin(AdminCommand),
    Backup(BackupCommand),
    Restore(RestoreCommand),
    Migrate(MigrateCommand),
}

#[derive(FromArgs, Debug)]
/// Write a checksummed backup (tokens, admins, audit log): of the running server, through its
/// control socket, or of a stopped data dir.
#[argh(
    subcommand,
    name = "backup",
    example = "Back up the running service (as root, through its control socket):\n$ {command_name} --to /var/backups/pa-auth/nightly.pab"
)]
pub struct BackupCommand {
    /// file to write (created with mode 0600; must not exist)
    #[argh(option)]
    pub to: PathBuf,
    /// print the admin API's JSON answer instead of text
    #[argh(switch)]
    pub json: bool,
    /// the running server's control socket (default: found from the data dir; without one, the data dir is used offline)
    #[argh(option)]
    pub socket: Option<PathBuf>,
    /// data directory (default ./pa-auth-data; env PA_AUTH_DATA_DIR)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// Restore a backup into a data dir (empty unless --force); the file is verified first.
#[argh(
    subcommand,
    name = "restore",
    example = "Restore it into a new data dir:\n$ {command_name} --from nightly.pab --data-dir /var/lib/pa-auth"
)]
pub struct RestoreCommand {
    /// backup file to read
    #[argh(option)]
    pub from: PathBuf,
    /// data directory (default ./pa-auth-data; env PA_AUTH_DATA_DIR)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    /// replace the contents of a non-empty data dir
    #[argh(switch)]
    pub force: bool,
}

#[derive(FromArgs, Debug)]
/// Move a site between the embedded store and PostgreSQL (cluster mode), verified: every
/// token, admin and audit event, through the backup format. The target must be empty; no
/// server may use either side meanwhile.
#[argh(
    subcommand,
    name = "migrate",
    example = "Move a single-node site to PostgreSQL (cluster mode):\n$ {command_name} --from-data-dir /var/lib/pa-auth --to postgres://pa_auth@db1/pa_auth",
    example = "The same, the URL (with its password) from the nodes' environment file:\n$ sudo sh -c 'set -a; . /etc/default/pa-auth; {command_name} --from-data-dir /var/lib/pa-auth'"
)]
pub struct MigrateCommand {
    /// the embedded store to read (a single-node site)
    #[argh(option)]
    pub from_data_dir: Option<PathBuf>,
    /// the PostgreSQL database to read (postgres://…)
    #[argh(option)]
    pub from: Option<String>,
    /// the PostgreSQL database to fill (postgres://…; a side given neither way is the one in PA_AUTH_DATABASE_URL, which keeps a password off the command line)
    #[argh(option)]
    pub to: Option<String>,
    /// the embedded store to fill (a new data dir)
    #[argh(option)]
    pub to_data_dir: Option<PathBuf>,
    /// PEM file of the CA that signed the database's certificate (env PA_AUTH_DATABASE_CA)
    #[argh(option)]
    pub database_ca: Option<PathBuf>,
}

/// `serve` and `check-config` take the same flags; this keeps them one list.
macro_rules! serve_flags {
    ($(#[$doc:meta])* $name:ident, $sub:literal, $example:literal) => {
        #[derive(FromArgs, Debug)]
        $(#[$doc])*
        #[argh(subcommand, name = $sub)]
        #[argh(example = $example)]
        pub struct $name {
            /// address to listen on (default 127.0.0.1:8080; env PA_AUTH_LISTEN)
            #[argh(option)]
            pub listen: Option<String>,
            /// data directory (default ./pa-auth-data; env PA_AUTH_DATA_DIR)
            #[argh(option)]
            pub data_dir: Option<PathBuf>,
            /// event-loop threads, where connections start and token checks run (default: one per core)
            #[argh(option)]
            pub event_loops: Option<String>,
            /// threads that run requests which may block (admin routes); they never hold a connection (default 16)
            #[argh(option)]
            pub workers: Option<String>,
            /// seconds between last-used flushes to disk (default 10)
            #[argh(option)]
            pub flush_interval: Option<String>,
            /// seconds: a flush skips a last-used time that moved less than this since it was last written, to cut writes on busy sites (default 1: every change; the final flush on shutdown writes all)
            #[argh(option)]
            pub last_used_resolution: Option<String>,
            /// open connections before new ones get 503 (default 4096)
            #[argh(option)]
            pub max_connections: Option<String>,
            /// seconds a client has to send a complete request head (default 10)
            #[argh(option)]
            pub header_timeout: Option<String>,
            /// seconds an idle keep-alive connection is kept (default 5)
            #[argh(option)]
            pub idle_timeout: Option<String>,
            /// admin and token lifecycle audit events kept before the oldest are dropped (default 100000)
            #[argh(option)]
            pub audit_retention: Option<String>,
            /// audit events anyone can cause (failed authentications and logins) kept before the oldest of them are dropped (default 100000)
            #[argh(option)]
            pub audit_failure_retention: Option<String>,
            /// PEM certificate chain; with --tls-key, serve HTTPS (env PA_AUTH_TLS_CERT)
            #[argh(option)]
            pub tls_cert: Option<PathBuf>,
            /// PEM private key for --tls-cert (env PA_AUTH_TLS_KEY)
            #[argh(option)]
            pub tls_key: Option<PathBuf>,
            /// comma-separated CIDR prefixes of proxies whose X-Correlation-Id is adopted
            /// (default loopback; "none" trusts no peer; env PA_AUTH_TRUSTED_PROXIES)
            #[argh(option)]
            pub trusted_proxies: Option<String>,
            /// log format: text or json (default text; env PA_AUTH_LOG_FORMAT)
            #[argh(option)]
            pub log_format: Option<String>,
            /// lowest level logged: info (one line per request), warn or error (default info)
            #[argh(option)]
            pub log_level: Option<String>,
            /// password checks (Argon2, 19 MiB each) run at once; others wait (default 2; env PA_AUTH_ARGON2_SLOTS)
            #[argh(option)]
            pub argon2_slots: Option<String>,
            /// URL clients use when a proxy terminates TLS, e.g. https://auth.example.com: cookies get Secure, CSRF checks Origin against it (env PA_AUTH_PUBLIC_URL)
            #[argh(option)]
            pub public_url: Option<String>,
            /// postgres://user@host[,host2]/db: keep tokens in PostgreSQL instead of the embedded store; --data-dir then holds only local files (env PA_AUTH_DATABASE_URL)
            #[argh(option)]
            pub database_url: Option<String>,
            /// PEM file of the CA that signed the database's certificate: connect with verified TLS (env PA_AUTH_DATABASE_CA)
            #[argh(option)]
            pub database_ca: Option<PathBuf>,
            /// with --database-url: seconds a node may go without confirming the database's latest change before it answers forward-auth and /healthz with 503 (default 2)
            #[argh(option)]
            pub max_staleness: Option<String>,
            /// send a copy of every audit event as RFC 5424 syslog: udp://HOST:PORT, tcp://HOST:PORT (octet-counted) or unix:///dev/log
            #[argh(option)]
            pub audit_syslog: Option<String>,
            /// seconds: the audit export serves an event once it is this old, so that every event written before it is committed (default 120; a request may append its event up to a minute after its time, and nodes' clocks differ)
            #[argh(option)]
            pub audit_export_settle: Option<String>,
            /// with --database-url: keep verifying from this node's copy even when it cannot confirm the latest changes (a deleted token may then still be accepted; env PA_AUTH_SERVE_STALE=true)
            #[argh(switch)]
            pub serve_stale: bool,
            /// days: refuse new tokens that would live longer (or never expire); existing ones are flagged in their view and counted in /metrics, never revoked (default 0: no limit; env PA_AUTH_MAX_TOKEN_LIFETIME)
            #[argh(option)]
            pub max_token_lifetime: Option<String>,
            /// refuse new tokens without an expiry; existing ones are flagged, never revoked (env PA_AUTH_REQUIRE_EXPIRY=1|true)
            #[argh(switch)]
            pub require_expiry: bool,
            /// http(s):// URL to send token lifecycle events to, signed with --webhook-secret; repeat for several receivers (env PA_AUTH_WEBHOOK_URL, space-separated)
            #[argh(option)]
            pub webhook_url: Vec<String>,
            /// the HMAC-SHA256 key of each webhook's PA-Signature header, at least 16 characters (env PA_AUTH_WEBHOOK_SECRET; prefer --webhook-secret-file)
            #[argh(option)]
            pub webhook_secret: Option<String>,
            /// file holding the webhook secret (one line), e.g. a systemd credential (env PA_AUTH_WEBHOOK_SECRET_FILE)
            #[argh(option)]
            pub webhook_secret_file: Option<PathBuf>,
            /// PEM file of the CA(s) an https webhook receiver's certificate must chain to (default: the system's; env PA_AUTH_WEBHOOK_CA)
            #[argh(option)]
            pub webhook_ca: Option<PathBuf>,
            /// days without use after which a token.unused webhook event is sent (default 90; 0: never; env PA_AUTH_UNUSED_AFTER)
            #[argh(option)]
            pub unused_after: Option<String>,
            /// seconds between the scans for token.expiring, token.expired and token.unused events (default 60; env PA_AUTH_WEBHOOK_SCAN_INTERVAL)
            #[argh(option)]
            pub webhook_scan_interval: Option<String>,
            /// path prefix of the GitLab-compatible token revocation API, e.g. /gitlab-revocation (…/v1/revocable_token_types, …/v1/revoke_tokens); needs --revocation-api-token-file (env PA_AUTH_REVOCATION_API_PREFIX)
            #[argh(option)]
            pub revocation_api_prefix: Option<String>,
            /// file holding the revocation API's own credential (one line, 32 to 512 visible ASCII characters, not an API token) that GitLab sends in Authorization (env PA_AUTH_REVOCATION_API_TOKEN_FILE)
            #[argh(option)]
            pub revocation_api_token_file: Option<PathBuf>,
            /// unix socket the CLI manages the running server through (mode 0600; root and the service's user only): a path or none (default $RUNTIME_DIRECTORY/control.sock under systemd, else <data-dir>/control.sock; env PA_AUTH_CONTROL_SOCKET)
            #[argh(option)]
            pub control_socket: Option<String>,
        }

        impl $name {
            /// The raw settings, before environment and validation.
            pub fn to_args(&self) -> ServeArgs {
                ServeArgs {
                    listen: self.listen.clone(),
                    data_dir: self.data_dir.clone(),
                    event_loops: self.event_loops.clone(),
                    workers: self.workers.clone(),
                    flush_interval: self.flush_interval.clone(),
                    last_used_resolution: self.last_used_resolution.clone(),
                    max_connections: self.max_connections.clone(),
                    header_timeout: self.header_timeout.clone(),
                    idle_timeout: self.idle_timeout.clone(),
                    audit_retention: self.audit_retention.clone(),
                    audit_failure_retention: self.audit_failure_retention.clone(),
                    tls_cert: self.tls_cert.clone(),
                    tls_key: self.tls_key.clone(),
                    log_format: self.log_format.clone(),
                    log_level: self.log_level.clone(),
                    trusted_proxies: self.trusted_proxies.clone(),
                    argon2_slots: self.argon2_slots.clone(),
                    public_url: self.public_url.clone(),
                    database_url: self.database_url.clone(),
                    database_ca: self.database_ca.clone(),
                    max_staleness: self.max_staleness.clone(),
                    audit_syslog: self.audit_syslog.clone(),
                    audit_export_settle: self.audit_export_settle.clone(),
                    serve_stale: self.serve_stale,
                    max_token_lifetime: self.max_token_lifetime.clone(),
                    require_expiry: self.require_expiry,
                    webhook_url: self.webhook_url.clone(),
                    webhook_secret: self.webhook_secret.clone(),
                    webhook_secret_file: self.webhook_secret_file.clone(),
                    webhook_ca: self.webhook_ca.clone(),
                    unused_after: self.unused_after.clone(),
                    webhook_scan_interval: self.webhook_scan_interval.clone(),
                    revocation_api_prefix: self.revocation_api_prefix.clone(),
                    revocation_api_token_file: self.revocation_api_token_file.clone(),
                    control_socket: self.control_socket.clone(),
                }
            }
        }
    };
}

serve_flags!(
    /// Run the service (flags also from PA_AUTH_<FLAG> environment variables).
    ServeCommand,
    "serve",
    "On the embedded store, loopback only (the site's proxy in front):\n$ {command_name} --listen 127.0.0.1:8080 --data-dir /var/lib/pa-auth"
);

serve_flags!(
    /// Validate flags, environment and TLS files as `serve` would, without starting.
    CheckConfigCommand,
    "check-config",
    "Check HTTPS files before a restart:\n$ {command_name} --tls-cert /etc/pa-auth/tls.crt --tls-key /etc/pa-auth/tls.key"
);

#[derive(FromArgs, Debug)]
/// Manage API tokens: through the running server's control socket, or offline on a stopped
/// data dir.
#[argh(
    subcommand,
    name = "token",
    example = "List the running service's tokens (as root, through its control socket):\n$ {command_name} list"
)]
pub struct TokenCommand {
    #[argh(subcommand)]
    pub action: TokenAction,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum TokenAction {
    Create(TokenCreate),
    List(TokenList),
    Get(TokenGet),
    Update(TokenUpdateCommand),
    Rotate(TokenRotate),
    Delete(TokenDelete),
    Revoke(TokenRevoke),
    BulkDelete(TokenBulkDelete),
    Usage(TokenUsage),
}

#[derive(FromArgs, Debug)]
/// Create a token; prints the secret alone on stdout (shown once).
#[argh(
    subcommand,
    name = "create",
    example = "A token for a nightly job, working through June 30 (UTC):\n$ {command_name} --name nightly-export --expires 2027-06-30 --owner team-data"
)]
pub struct TokenCreate {
    /// token name (1..100 characters, unique ignoring case)
    #[argh(option)]
    pub name: String,
    /// expiry: YYYY-MM-DD (works through that day, UTC) or RFC 3339 date-time
    #[argh(option)]
    pub expires: Option<String>,
    /// who the token is for, e.g. a team or an e-mail address (at most 200 characters)
    #[argh(option)]
    pub owner: Option<String>,
    /// what the token is for (at most 500 characters)
    #[argh(option)]
    pub description: Option<String>,
    /// a network the token may be used from (IPv4 or IPv6 prefix, e.g. 10.0.0.0/8);
    /// repeat for several (at most 100); none: anywhere
    #[argh(option)]
    pub allowed_cidr: Vec<String>,
    /// read (only GET, HEAD and OPTIONS through forward-auth) or full (the default)
    #[argh(option)]
    pub access: Option<String>,
    /// print the admin API's JSON answer instead of text
    #[argh(switch)]
    pub json: bool,
    /// the running server's control socket (default: found from the data dir; without one, the data dir is used offline)
    #[argh(option)]
    pub socket: Option<PathBuf>,
    /// data directory (default ./pa-auth-data; env PA_AUTH_DATA_DIR)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// Show one token: its fields, status, rotation and restrictions (never its secret).
#[argh(
    subcommand,
    name = "get",
    example = "$ {command_name} 0f8e6c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b --json"
)]
pub struct TokenGet {
    /// the token's id (UUID)
    #[argh(positional)]
    pub id: String,
    /// print the admin API's JSON answer (the token's view) instead of text
    #[argh(switch)]
    pub json: bool,
    /// the running server's control socket (default: found from the data dir; without one, the data dir is used offline)
    #[argh(option)]
    pub socket: Option<PathBuf>,
    /// data directory (default ./pa-auth-data; env PA_AUTH_DATA_DIR)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// Edit a token's name, owner, description, allowed networks or access (never its secret
/// or expiry).
#[argh(
    subcommand,
    name = "update",
    example = "Say whose it is and what for:\n$ {command_name} 0f8e6c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b --owner team-data --description \"warehouse export\""
)]
pub struct TokenUpdateCommand {
    /// the token's id (UUID)
    #[argh(positional)]
    pub id: String,
    /// new name (1..100 characters, unique ignoring case)
    #[argh(option)]
    pub name: Option<String>,
    /// new owner; an empty value removes it
    #[argh(option)]
    pub owner: Option<String>,
    /// new description; an empty value removes it
    #[argh(option)]
    pub description: Option<String>,
    /// replace the networks the token may be used from (repeat for several, at most 100)
    #[argh(option)]
    pub allowed_cidr: Vec<String>,
    /// let the token be used from anywhere again (clears its allowed networks)
    #[argh(switch)]
    pub allow_anywhere: bool,
    /// read (only GET, HEAD and OPTIONS through forward-auth) or full
    #[argh(option)]
    pub access: Option<String>,
    /// print the admin API's JSON answer instead of text
    #[argh(switch)]
    pub json: bool,
    /// the running server's control socket (default: found from the data dir; without one, the data dir is used offline)
    #[argh(option)]
    pub socket: Option<PathBuf>,
    /// data directory (default ./pa-auth-data; env PA_AUTH_DATA_DIR)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// List tokens, newest first.
#[argh(
    subcommand,
    name = "list",
    example = "Every token as JSON:\n$ {command_name} --json"
)]
pub struct TokenList {
    /// print JSON (the admin API's views) instead of a table
    #[argh(switch)]
    pub json: bool,
    /// the running server's control socket (default: found from the data dir; without one, the data dir is used offline)
    #[argh(option)]
    pub socket: Option<PathBuf>,
    /// data directory (default ./pa-auth-data; env PA_AUTH_DATA_DIR)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// Give a token a new secret (same id, name and fields); prints the new secret alone on
/// stdout (shown once). The old secret keeps working for the overlap chosen (one of
/// --overlap or --until-new-secret-used is required).
#[argh(
    subcommand,
    name = "rotate",
    example = "A new secret; the old one keeps working for a day:\n$ {command_name} 0f8e6c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b --overlap 24h"
)]
pub struct TokenRotate {
    /// the token's id (UUID)
    #[argh(positional)]
    pub id: String,
    /// how long the old secret keeps working: 30m, 24h, 7d (at most 30d), or 0 for not at all
    #[argh(option)]
    pub overlap: Option<String>,
    /// the old secret works until the new one is first used (bounded by --max-overlap)
    #[argh(switch)]
    pub until_new_secret_used: bool,
    /// with --until-new-secret-used: the longest the old secret works (default 7d)
    #[argh(option)]
    pub max_overlap: Option<String>,
    /// replace the networks the token may be used from (repeat for several, at most 100)
    #[argh(option)]
    pub allowed_cidr: Vec<String>,
    /// let the token be used from anywhere again (clears its allowed networks)
    #[argh(switch)]
    pub allow_anywhere: bool,
    /// read (only GET, HEAD and OPTIONS through forward-auth) or full
    #[argh(option)]
    pub access: Option<String>,
    /// print JSON (the admin API's rotate answer: the view and the secret) instead
    #[argh(switch)]
    pub json: bool,
    /// the running server's control socket (default: found from the data dir; without one, the data dir is used offline)
    #[argh(option)]
    pub socket: Option<PathBuf>,
    /// data directory (default ./pa-auth-data; env PA_AUTH_DATA_DIR)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// Delete a token by id.
#[argh(
    subcommand,
    name = "delete",
    example = "$ {command_name} 0f8e6c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b"
)]
pub struct TokenDelete {
    /// the token's id (UUID)
    #[argh(positional)]
    pub id: String,
    /// print the admin API's JSON answer instead of text
    #[argh(switch)]
    pub json: bool,
    /// the running server's control socket (default: found from the data dir; without one, the data dir is used offline)
    #[argh(option)]
    pub socket: Option<PathBuf>,
    /// data directory (default ./pa-auth-data; env PA_AUTH_DATA_DIR)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// Revoke leaked tokens by value: reads up to 1000 values from stdin, one a line (quotes,
/// commas, `Bearer ` and whitespace around each are fine), deletes each known token and
/// prints its id and name; never prints a value. Exit 0 even when some are unknown.
#[argh(
    subcommand,
    name = "revoke",
    example = "Revoke every token a scanner found (one value a line):\n$ {command_name} < leaked.txt"
)]
pub struct TokenRevoke {
    /// print JSON (the admin API's revoke answer) instead of lines
    #[argh(switch)]
    pub json: bool,
    /// the running server's control socket (default: found from the data dir; without one, the data dir is used offline)
    #[argh(option)]
    pub socket: Option<PathBuf>,
    /// data directory (default ./pa-auth-data; env PA_AUTH_DATA_DIR)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// Delete tokens by filter. Without --confirm-count it is a dry run: prints how many tokens
/// the filter selects and some of them. With --confirm-count N it deletes them, only if the
/// filter still selects exactly N (at most 10000). Criteria are ANDed; --all selects every
/// token and goes alone.
#[argh(
    subcommand,
    name = "bulk-delete",
    example = "See what would go, then delete exactly that:\n$ {command_name} --owner team-legacy --unused-for-days 90\n$ {command_name} --owner team-legacy --unused-for-days 90 --confirm-count 37 --confirm-selection 5f0c…"
)]
pub struct TokenBulkDelete {
    /// tokens with exactly this owner (ignoring case)
    #[argh(option)]
    pub owner: Option<String>,
    /// tokens created before this date (YYYY-MM-DD, 00:00 UTC) or RFC 3339 date-time
    #[argh(option)]
    pub created_before: Option<String>,
    /// tokens last used (or, never used, created) at least this many days ago
    #[argh(option)]
    pub unused_for_days: Option<u64>,
    /// tokens never used
    #[argh(switch)]
    pub never_used: bool,
    /// tokens whose name starts with this (ignoring case)
    #[argh(option)]
    pub name_prefix: Option<String>,
    /// every token (alone)
    #[argh(switch)]
    pub all: bool,
    /// only count and show (the default without --confirm-count)
    #[argh(switch)]
    pub dry_run: bool,
    /// delete, if the filter selects exactly this many (the dry run's count)
    #[argh(option)]
    pub confirm_count: Option<u64>,
    /// with --confirm-count: delete only if the filter selects exactly the tokens the dry run
    /// showed (the selection it printed)
    #[argh(option)]
    pub confirm_selection: Option<String>,
    /// print the admin API's JSON answer instead of text
    #[argh(switch)]
    pub json: bool,
    /// the running server's control socket (default: found from the data dir; without one, the data dir is used offline)
    #[argh(option)]
    pub socket: Option<PathBuf>,
    /// data directory (default ./pa-auth-data; env PA_AUTH_DATA_DIR)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// Show a token's usage: requests per day (90 days) and its last ten client addresses, as
/// last flushed by the server.
#[argh(
    subcommand,
    name = "usage",
    example = "$ {command_name} 0f8e6c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b --json"
)]
pub struct TokenUsage {
    /// the token's id (UUID)
    #[argh(positional)]
    pub id: String,
    /// print JSON (the admin API's usage view) instead of text
    #[argh(switch)]
    pub json: bool,
    /// the running server's control socket (default: found from the data dir; without one, the data dir is used offline)
    #[argh(option)]
    pub socket: Option<PathBuf>,
    /// data directory (default ./pa-auth-data; env PA_AUTH_DATA_DIR)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// Manage admin accounts: through the running server's control socket, or offline.
#[argh(
    subcommand,
    name = "admin",
    example = "$ {command_name} set-password --username admin < new-password.txt"
)]
pub struct AdminCommand {
    #[argh(subcommand)]
    pub action: AdminAction,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum AdminAction {
    SetPassword(SetPassword),
}

#[derive(FromArgs, Debug)]
/// Set an admin's password (read from stdin); creates the admin if missing.
#[argh(
    subcommand,
    name = "set-password",
    example = "Set a new password read from stdin:\n$ {command_name} --username admin < new-password.txt"
)]
pub struct SetPassword {
    /// admin username (default admin)
    #[argh(option, default = "String::from(\"admin\")")]
    pub username: String,
    /// print the admin API's JSON answer instead of text
    #[argh(switch)]
    pub json: bool,
    /// the running server's control socket (default: found from the data dir; without one, the data dir is used offline)
    #[argh(option)]
    pub socket: Option<PathBuf>,
    /// data directory (default ./pa-auth-data; env PA_AUTH_DATA_DIR)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
}

fn env_lookup(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// Opens an existing data dir for an offline command.
fn open_existing(dir: &Path) -> Result<SledStore> {
    let dir = &client::trusted_data_dir(dir, false)?;
    if !dir.join("db").exists() {
        return Err(Error::Config(format!(
            "no pa-auth data in {} (set --data-dir or PA_AUTH_DATA_DIR)",
            dir.display()
        )));
    }
    Ok(SledStore::open(dir, &StoreOptions::default())?)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if cli.version {
        println!(
            "pa-auth {} (commit {})",
            crate::serve::VERSION,
            crate::serve::GIT_COMMIT
        );
        return Ok(());
    }
    match cli.command {
        None => Err(Error::Config(
            "missing command; see `pa-auth --help`".into(),
        )),
        Some(Command::Serve(s)) => {
            crate::serve::serve(&Config::from_args(&s.to_args(), &env_lookup)?)
        }
        Some(Command::CheckConfig(c)) => {
            let config = Config::from_args(&c.to_args(), &env_lookup)?;
            println!("{}", config.describe());
            Ok(())
        }
        Some(Command::Token(t)) => match t.action {
            TokenAction::Create(c) => commands::token_create(&c),
            TokenAction::List(l) => commands::token_list(&l),
            TokenAction::Get(g) => commands::token_get(&g),
            TokenAction::Update(u) => commands::token_update(&u),
            TokenAction::Rotate(r) => commands::token_rotate(&r),
            TokenAction::Delete(d) => commands::token_delete(&d),
            TokenAction::Revoke(r) => commands::token_revoke(&r),
            TokenAction::BulkDelete(b) => commands::token_bulk_delete(&b),
            TokenAction::Usage(u) => commands::token_usage(&u),
        },
        Some(Command::Admin(a)) => match a.action {
            AdminAction::SetPassword(p) => commands::set_password(&p),
        },
        Some(Command::Backup(b)) => commands::backup(&b),
        Some(Command::Restore(r)) => restore(&r),
        Some(Command::Migrate(m)) => migrate(&m),
    }
}

fn restore(r: &RestoreCommand) -> Result<()> {
    let bytes = std::fs::read(&r.from)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", r.from.display())))?;
    // Verified in full before the data dir is even opened.
    let contents = crate::service::backup::read_backup(&bytes)?;
    let dir = client::trusted_data_dir(&client::data_dir_or_default(r.data_dir.as_deref()), true)?;
    let store = match SledStore::open(&dir, &StoreOptions::default()) {
        // What start-up calls damaged is what a forced restore is for.
        Err(crate::store::Error::Corrupt(why)) if r.force => {
            eprintln!(
                "the store in {} is damaged ({why}); --force replaces it",
                dir.display()
            );
            crate::store::sled::discard_store(&dir)?;
            SledStore::open(&dir, &StoreOptions::default())?
        }
        other => other?,
    };
    if !store.is_empty() {
        if !r.force {
            return Err(Error::Config(format!(
                "{} already holds tokens, admins or audit events; --force replaces them",
                store.data_dir().display()
            )));
        }
        store.clear_all()?;
    }
    let summary = crate::service::backup::restore(&store, contents)?;
    let _ = std::fs::remove_file(
        store
            .data_dir()
            .join(crate::service::admins::passwords::INITIAL_PASSWORD_FILE),
    );
    eprintln!(
        "restored {} tokens, {} admins, {} audit events into {}",
        summary.tokens,
        summary.admins,
        summary.audit_events,
        store.data_dir().display()
    );
    Ok(())
}

/// One side of a migration, opened for it.
/// One side of a migration. The source must hold pa-auth data (a mistyped path or URL is
/// refused, and nothing is created there); no server may be using either side.
fn open_side(
    data_dir: Option<&PathBuf>,
    url: Option<&str>,
    ca: Option<&Path>,
    which: &str,
) -> Result<std::sync::Arc<dyn crate::store::Store>> {
    use crate::store::postgres::{DatabaseUrl, PgOptions, PgStore};
    let source = which == "from";
    match (data_dir, url) {
        (Some(dir), None) if source => Ok(std::sync::Arc::new(open_existing(dir)?)),
        (Some(dir), None) => Ok(std::sync::Arc::new(SledStore::open(
            &client::trusted_data_dir(dir, true)?,
            &StoreOptions::default(),
        )?)),
        (None, Some(url)) => {
            let url = DatabaseUrl::parse(url, ca).map_err(Error::Config)?;
            let options = PgOptions {
                // Nothing is written there by a migration.
                local_dir: std::env::temp_dir()
                    .join(format!("pa-auth-migrate-{}", std::process::id())),
                audit_cap: u64::MAX,
                audit_failure_cap: u64::MAX,
                max_staleness: std::time::Duration::from_secs(2),
                serving: false,
                create_schema: !source,
            };
            let store = PgStore::open(&url, &options);
            let _ = std::fs::remove_dir(&options.local_dir);
            let store = store?;
            let serving = store.serving_nodes()?;
            if !serving.is_empty() {
                return Err(Error::Config(format!(
                    "nodes are serving from the --{which} database ({}): stop them first",
                    serving.join(", ")
                )));
            }
            Ok(std::sync::Arc::new(store))
        }
        _ => Err(Error::Config(format!(
            "give the {which} side once: --{which}-data-dir DIR or --{which} postgres://…"
        ))),
    }
}

fn migrate(m: &MigrateCommand) -> Result<()> {
    // A URL with a password on the command line is readable by every local user in /proc
    // for the minutes a migration takes (outside attack): the side not given on the
    // command line is the database in PA_AUTH_DATABASE_URL, the one the nodes use (their
    // environment file), with PA_AUTH_DATABASE_CA as its CA unless --database-ca says.
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let database = env("PA_AUTH_DATABASE_URL");
    let given = |dir: &Option<PathBuf>, url: &Option<String>| dir.is_some() || url.is_some();
    let (from, to) = match (
        given(&m.from_data_dir, &m.from),
        given(&m.to_data_dir, &m.to),
        database,
    ) {
        (true, false, Some(url)) => (m.from.clone(), Some(url.trim().to_owned())),
        (false, true, Some(url)) => (Some(url.trim().to_owned()), m.to.clone()),
        _ => (m.from.clone(), m.to.clone()),
    };
    let ca = m
        .database_ca
        .clone()
        .or_else(|| env("PA_AUTH_DATABASE_CA").map(PathBuf::from));
    let ca = ca.as_deref();
    let source = open_side(m.from_data_dir.as_ref(), from.as_deref(), ca, "from")?;
    let target = open_side(m.to_data_dir.as_ref(), to.as_deref(), ca, "to")?;
    if !target.is_empty() {
        return Err(Error::Config(
            "the target already holds tokens, admins or audit events; migrate into an empty one"
                .into(),
        ));
    }
    let (bytes, summary) = crate::service::backup::write_backup(&*source, now_unix())?;
    // Through the backup format: read back (checksums) before anything is written.
    let contents = crate::service::backup::read_backup(&bytes)?;
    let restored = crate::service::backup::restore(&*target, contents)?;
    target.flush()?;
    // Verified: the target now holds exactly what the source did.
    let (check, _) = crate::service::backup::write_backup(&*target, now_unix())?;
    let again = crate::service::backup::read_backup(&check)?.summary();
    if (again.tokens, again.admins, again.audit_events)
        != (summary.tokens, summary.admins, summary.audit_events)
        || (restored.tokens, restored.admins) != (summary.tokens, summary.admins)
    {
        return Err(Error::Internal(format!(
            "the target holds {} tokens, {} admins, {} audit events after the migration, \
             the source {}, {}, {}: check both before using either",
            again.tokens,
            again.admins,
            again.audit_events,
            summary.tokens,
            summary.admins,
            summary.audit_events
        )));
    }
    eprintln!(
        "migrated and verified {} tokens, {} admins, {} audit events",
        summary.tokens, summary.admins, summary.audit_events
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command a user can type, as argh sees it.
    const COMMANDS: &[&[&str]] = &[
        &["serve"],
        &["check-config"],
        &["backup"],
        &["restore"],
        &["migrate"],
        &["token"],
        &["token", "create"],
        &["token", "list"],
        &["token", "get"],
        &["token", "update"],
        &["token", "rotate"],
        &["token", "delete"],
        &["token", "revoke"],
        &["token", "bulk-delete"],
        &["token", "usage"],
        &["admin"],
        &["admin", "set-password"],
    ];

    /// Issue 20 part 3: `--help` (and `pa-auth help <command>`) shows an example for every
    /// command, and every example parses as the command line it claims to be.
    #[test]
    fn every_command_has_an_example_that_parses() {
        for path in COMMANDS {
            let mut args: Vec<&str> = path.to_vec();
            args.push("--help");
            let help = match Cli::from_args(&["pa-auth"], &args) {
                Err(exit) => exit.output,
                Ok(_) => panic!("{path:?} --help parsed as a command"),
            };
            let examples: Vec<&str> = help
                .lines()
                .filter_map(|l| l.trim().strip_prefix("$ pa-auth "))
                .collect();
            assert!(!examples.is_empty(), "{path:?} has no example:\n{help}");
            for example in examples {
                // The shell's part (a redirection) is not the program's.
                let line = example.split(" < ").next().unwrap_or(example);
                let words = shell_words(line);
                let words: Vec<&str> = words.iter().map(String::as_str).collect();
                assert!(
                    words.starts_with(path),
                    "{path:?}'s example is for another command: {example}"
                );
                if let Err(e) = Cli::from_args(&["pa-auth"], &words) {
                    panic!("{path:?}'s example does not parse: {example}\n{}", e.output);
                }
            }
        }
    }

    /// Splits on spaces, keeping double-quoted words whole (enough for the examples).
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ' ' if !quoted => {
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                }
                c => word.push(c),
            }
        }
        if !word.is_empty() {
            words.push(word);
        }
        words
    }
}
