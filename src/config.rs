//! Configuration in two phases: [`ServeArgs`] as given on the command line or in `PA_AUTH_*`
//! environment variables (flags win), then a validated [`Config`]. Errors here are usage
//! errors (exit 2) and name the flag.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::domain::lifetime_policy::LifetimePolicy;
use crate::http::{ServerConfig, TrustedProxies};
use crate::logging::{Level, LogFormat};
use crate::service::error::{Error, Result};
use crate::service::webhooks::{ReceiverUrl, WebhookSettings};
use crate::store::postgres::DatabaseUrl;
use crate::web::public_url::PublicUrl;

/// Default listen address: loopback only; expose through the site's reverse proxy.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data dir, relative to the working directory (systemd sets `StateDirectory`).
pub const DEFAULT_DATA_DIR: &str = "./pa-auth-data";

/// Raw `serve` settings: each `None` falls back to `PA_AUTH_<FLAG>`, then the default.
#[derive(Debug, Clone, Default)]
pub struct ServeArgs {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub event_loops: Option<String>,
    pub workers: Option<String>,
    pub flush_interval: Option<String>,
    pub last_used_resolution: Option<String>,
    pub max_connections: Option<String>,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub audit_retention: Option<String>,
    pub audit_failure_retention: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub trusted_proxies: Option<String>,
    pub argon2_slots: Option<String>,
    pub public_url: Option<String>,
    pub database_url: Option<String>,
    pub database_ca: Option<PathBuf>,
    pub max_staleness: Option<String>,
    pub serve_stale: bool,
    pub max_token_lifetime: Option<String>,
    pub require_expiry: bool,
    pub audit_syslog: Option<String>,
    pub audit_export_settle: Option<String>,
    pub webhook_url: Vec<String>,
    pub webhook_secret: Option<String>,
    pub webhook_secret_file: Option<PathBuf>,
    pub webhook_ca: Option<PathBuf>,
    pub unused_after: Option<String>,
    pub webhook_scan_interval: Option<String>,
    pub revocation_api_prefix: Option<String>,
    pub revocation_api_token_file: Option<PathBuf>,
    pub control_socket: Option<String>,
}

/// Certificate and key files for HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Validated settings for `serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub flush_interval: Duration,
    /// A periodic flush skips a last-used time that moved less than this since it was last
    /// written (the final flush writes every one).
    pub last_used_resolution: Duration,
    /// Lifecycle audit events kept (admin and token changes, start/stop).
    pub audit_retention: u64,
    /// Audit events anyone can cause (failed authentications and logins) kept.
    pub audit_failure_retention: u64,
    pub http: ServerConfig,
    pub tls: Option<TlsFiles>,
    pub log_format: LogFormat,
    pub log_level: Level,
    /// Argon2 runs (19 MiB each) at once; the rest wait.
    pub argon2_slots: usize,
    /// The URL clients use, when a proxy in front terminates TLS.
    pub public_url: Option<PublicUrl>,
    /// PostgreSQL instead of the embedded store.
    pub database: Option<DatabaseUrl>,
    /// With a database: how long a node may go without confirming its latest change.
    pub max_staleness: Duration,
    /// With a database: verify from this node's copy even when it is stale (opt-in).
    pub serve_stale: bool,
    /// `--max-token-lifetime`, `--require-expiry`.
    pub lifetime_policy: LifetimePolicy,
    /// Where a copy of every audit event goes as RFC 5424 syslog.
    pub audit_syslog: Option<crate::service::syslog::Target>,
    /// The audit export serves events once they are this old (all written before are
    /// committed by then).
    pub audit_export_settle: Duration,
    /// `--webhook-url` and the rest: where token lifecycle events are sent.
    pub webhooks: Option<WebhookSettings>,
    /// `--revocation-api-prefix` with `--revocation-api-token-file`: the GitLab-compatible
    /// token revocation API, off unless both are given.
    pub revocation_api: Option<RevocationApiSettings>,
}

/// `--control-socket`: a path, or `none`; by default `control.sock` in systemd's
/// `RuntimeDirectory=` (`$RUNTIME_DIRECTORY`) when there is one, else in the data dir. A Unix
/// socket's path is at most 107 bytes.
fn control_socket(
    args: &ServeArgs,
    env: EnvLookup<'_>,
    data_dir: &Path,
) -> Result<Option<PathBuf>> {
    const MAX_PATH: usize = 107;
    match pick(&args.control_socket, env, "CONTROL_SOCKET") {
        Some((v, _)) if v.trim() == "none" => Ok(None),
        Some((v, source)) => {
            let path = PathBuf::from(v.trim());
            if !path.is_absolute() || v.trim().ends_with('/') {
                return Err(Error::Config(format!(
                    "{source}: expected a socket path (e.g. /run/pa-auth/control.sock) or none, got {v:?}"
                )));
            }
            if path.as_os_str().len() > MAX_PATH {
                return Err(Error::Config(format!(
                    "{source}: {} is longer than a Unix socket path may be ({MAX_PATH} bytes)",
                    path.display()
                )));
            }
            Ok(Some(path))
        }
        None => {
            let path = match env("RUNTIME_DIRECTORY") {
                // systemd may list several, separated by ':'; the first is this unit's.
                Some(dirs) => {
                    PathBuf::from(dirs.split(':').next().unwrap_or(&dirs)).join(CONTROL_SOCKET_NAME)
                }
                None => data_dir.join(CONTROL_SOCKET_NAME),
            };
            // A data dir too deep for a socket path: served without one (start-up says so).
            Ok((path.as_os_str().len() <= MAX_PATH).then_some(path))
        }
    }
}

/// The control socket's file name, in the runtime directory or the data dir.
pub const CONTROL_SOCKET_NAME: &str = "control.sock";

/// Where the revocation API answers and the credential it requires.
#[derive(Clone)]
pub struct RevocationApiSettings {
    pub prefix: String,
    pub credential: String,
}

impl std::fmt::Debug for RevocationApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RevocationApiSettings({}, <credential redacted>)",
            self.prefix
        )
    }
}

/// `--revocation-api-prefix` and `--revocation-api-token-file`, both or neither. The prefix
/// is `/` and path segments of `A-Z a-z 0-9 . _ ~ -` (no `.` or `..` segment, no trailing
/// `/`, at most 100 characters) whose two paths no other route answers (so not under
/// `/admin`, `/api`, `/auth/verify`, …). The file holds the credential on one line.
fn revocation_api_settings(
    args: &ServeArgs,
    env: EnvLookup<'_>,
) -> Result<Option<RevocationApiSettings>> {
    let prefix = pick(&args.revocation_api_prefix, env, "REVOCATION_API_PREFIX");
    let file = args
        .revocation_api_token_file
        .clone()
        .or_else(|| env("PA_AUTH_REVOCATION_API_TOKEN_FILE").map(PathBuf::from));
    let (prefix, source, file) = match (prefix, file) {
        (None, None) => return Ok(None),
        (Some((p, source)), Some(f)) => (p.trim().to_owned(), source, f),
        _ => {
            return Err(Error::Config(
                "--revocation-api-prefix and --revocation-api-token-file go together".into(),
            ))
        }
    };
    let segments_ok = prefix.len() <= 100
        && prefix.starts_with('/')
        && prefix[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
        });
    if !segments_ok {
        return Err(Error::Config(format!(
            "{source}: expected a path like /gitlab-revocation (segments of letters, digits, \
             '.', '_', '~', '-'; no trailing '/'), got {prefix:?}"
        )));
    }
    use crate::web::routes::{route_of, Route};
    let taken = [
        prefix.clone(),
        format!("{prefix}/v1/revocable_token_types"),
        format!("{prefix}/v1/revoke_tokens"),
    ]
    .iter()
    .any(|p| route_of(p) != Route::NotFound);
    if taken {
        return Err(Error::Config(format!(
            "{source}: {prefix} overlaps another route (/admin, /api, /auth/verify, …); \
             choose a path of its own, like /gitlab-revocation"
        )));
    }
    let credential = std::fs::read_to_string(&file)
        .map_err(|e| {
            Error::Config(format!(
                "--revocation-api-token-file {}: {e}",
                file.display()
            ))
        })?
        .trim_end_matches(['\r', '\n'])
        .to_owned();
    crate::domain::leak_response::check_revocation_credential(&credential).map_err(|e| {
        Error::Config(format!(
            "--revocation-api-token-file {}: the credential {e}",
            file.display()
        ))
    })?;
    Ok(Some(RevocationApiSettings { prefix, credential }))
}

/// Longest `--max-token-lifetime`, in days (100 years).
const MAX_TOKEN_LIFETIME_DAYS: u32 = 36_500;

/// The most webhook receivers.
const MAX_WEBHOOK_URLS: usize = 10;

/// `--webhook-url` (repeatable), its secret (from the flag, a file or the environment), CA,
/// `--unused-after` and the scan interval; `None` without a URL. A URL without a secret is
/// refused: an unsigned webhook is one anybody on the network could forge.
fn webhook_settings(args: &ServeArgs, env: EnvLookup<'_>) -> Result<Option<WebhookSettings>> {
    let (raw_urls, source) = if args.webhook_url.is_empty() {
        let listed = env("PA_AUTH_WEBHOOK_URL").unwrap_or_default();
        (
            listed
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
            "PA_AUTH_WEBHOOK_URL",
        )
    } else {
        (args.webhook_url.clone(), "--webhook-url")
    };
    let secret_file = args
        .webhook_secret_file
        .clone()
        .or_else(|| env("PA_AUTH_WEBHOOK_SECRET_FILE").map(PathBuf::from));
    let secret = match (
        pick(&args.webhook_secret, env, "WEBHOOK_SECRET"),
        &secret_file,
    ) {
        (Some(_), Some(_)) => {
            return Err(Error::Config(
                "give the webhook secret once: --webhook-secret or --webhook-secret-file".into(),
            ))
        }
        (Some((v, _)), None) => Some(v),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    Error::Config(format!("--webhook-secret-file {}: {e}", path.display()))
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        (None, None) => None,
    };
    let ca = args
        .webhook_ca
        .clone()
        .or_else(|| env("PA_AUTH_WEBHOOK_CA").map(PathBuf::from));
    let unused_after = number(
        pick(&args.unused_after, env, "UNUSED_AFTER"),
        90u32,
        0,
        36_500,
    )?;
    let scan_interval = number(
        pick(&args.webhook_scan_interval, env, "WEBHOOK_SCAN_INTERVAL"),
        60u64,
        1,
        3600,
    )?;
    if raw_urls.is_empty() {
        if secret.is_some() || ca.is_some() {
            return Err(Error::Config(
                "--webhook-secret and --webhook-ca need at least one --webhook-url".into(),
            ));
        }
        return Ok(None);
    }
    if raw_urls.len() > MAX_WEBHOOK_URLS {
        return Err(Error::Config(format!(
            "{source}: at most {MAX_WEBHOOK_URLS} webhook receivers"
        )));
    }
    let mut receivers: Vec<ReceiverUrl> = Vec::with_capacity(raw_urls.len());
    for raw in &raw_urls {
        let url =
            ReceiverUrl::parse(raw.trim()).map_err(|e| Error::Config(format!("{source}: {e}")))?;
        if !receivers.contains(&url) {
            receivers.push(url);
        }
    }
    let Some(secret) = secret else {
        return Err(Error::Config(
            "--webhook-url needs --webhook-secret or --webhook-secret-file (the key receivers \
             check each event's PA-Signature with)"
                .into(),
        ));
    };
    if secret.len() < crate::service::webhooks::MIN_SECRET {
        return Err(Error::Config(format!(
            "the webhook secret must be at least {} characters",
            crate::service::webhooks::MIN_SECRET
        )));
    }
    let settings = WebhookSettings {
        receivers,
        secret: secret.into_bytes(),
        ca,
        unused_after_days: (unused_after > 0).then_some(unused_after),
        scan_interval: Duration::from_secs(scan_interval),
    };
    // An https receiver's trust is checked now, not at the first event.
    settings.tls().map_err(Error::Config)?;
    Ok(Some(settings))
}

/// Reads an environment variable through a lookup function (tests pass their own).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn pick(flag: &Option<String>, env: EnvLookup<'_>, var: &str) -> Option<(String, String)> {
    match flag {
        Some(v) => Some((
            v.clone(),
            format!("--{}", var.to_lowercase().replace('_', "-")),
        )),
        None => env(&format!("PA_AUTH_{var}")).map(|v| (v, format!("PA_AUTH_{var}"))),
    }
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    raw: Option<(String, String)>,
    default: T,
    min: T,
    max: T,
) -> Result<T> {
    let Some((value, source)) = raw else {
        return Ok(default);
    };
    match value.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(Error::Config(format!(
            "{source}: expected a whole number from {min} to {max}, got {value:?}"
        ))),
    }
}

impl Config {
    /// Validates raw settings against the environment.
    pub fn from_args(args: &ServeArgs, env: EnvLookup<'_>) -> Result<Config> {
        let (listen_raw, source) =
            pick(&args.listen, env, "LISTEN").unwrap_or((DEFAULT_LISTEN.into(), "default".into()));
        let listen: SocketAddr = listen_raw.trim().parse().map_err(|_| {
            Error::Config(format!("{source}: expected an address like 127.0.0.1:8080 or [::1]:8080, got {listen_raw:?}"))
        })?;
        let data_dir = args
            .data_dir
            .clone()
            .or_else(|| env("PA_AUTH_DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if data_dir.as_os_str().is_empty() {
            return Err(Error::Config("--data-dir must not be empty".into()));
        }
        let defaults = ServerConfig::default();
        let event_loops = number(
            pick(&args.event_loops, env, "EVENT_LOOPS"),
            defaults.event_loops,
            1,
            256,
        )?;
        let workers = number(
            pick(&args.workers, env, "WORKERS"),
            defaults.workers,
            1,
            4096,
        )?;
        let flush = number(
            pick(&args.flush_interval, env, "FLUSH_INTERVAL"),
            10u64,
            1,
            3600,
        )?;
        let max_connections = number(
            pick(&args.max_connections, env, "MAX_CONNECTIONS"),
            defaults.max_connections,
            1,
            1_000_000,
        )?;
        let header_timeout = number(
            pick(&args.header_timeout, env, "HEADER_TIMEOUT"),
            10u64,
            1,
            600,
        )?;
        let idle_timeout = number(pick(&args.idle_timeout, env, "IDLE_TIMEOUT"), 5u64, 1, 3600)?;
        let audit_retention = number(
            pick(&args.audit_retention, env, "AUDIT_RETENTION"),
            100_000u64,
            100,
            100_000_000,
        )?;
        let trusted_proxies = match pick(&args.trusted_proxies, env, "TRUSTED_PROXIES") {
            None => TrustedProxies::default(),
            Some((v, source)) => {
                TrustedProxies::parse(&v).map_err(|e| Error::Config(format!("{source}: {e}")))?
            }
        };
        let audit_failure_retention = number(
            pick(
                &args.audit_failure_retention,
                env,
                "AUDIT_FAILURE_RETENTION",
            ),
            100_000u64,
            100,
            100_000_000,
        )?;
        let path_of = |flag: &Option<PathBuf>, var: &str| {
            flag.clone()
                .or_else(|| env(&format!("PA_AUTH_{var}")).map(PathBuf::from))
        };
        let tls = match (
            path_of(&args.tls_cert, "TLS_CERT"),
            path_of(&args.tls_key, "TLS_KEY"),
        ) {
            (Some(cert), Some(key)) => {
                let files = TlsFiles { cert, key };
                crate::http::tls::load_server_config(&files.cert, &files.key)
                    .map_err(|e| Error::Config(e.to_string()))?;
                Some(files)
            }
            (None, None) => None,
            _ => return Err(Error::Config("--tls-cert and --tls-key go together".into())),
        };
        let argon2_slots = number(
            pick(&args.argon2_slots, env, "ARGON2_SLOTS"),
            crate::service::admins::passwords::DEFAULT_ARGON2_SLOTS,
            1,
            64,
        )?;
        let public_url = match pick(&args.public_url, env, "PUBLIC_URL") {
            None => None,
            Some((v, source)) => Some(PublicUrl::parse(v.trim()).ok_or_else(|| {
                Error::Config(format!(
                    "{source}: expected an http:// or https:// URL with a host and no path, \
                     like https://auth.example.com, got {v:?}"
                ))
            })?),
        };
        let database_ca = args
            .database_ca
            .clone()
            .or_else(|| env("PA_AUTH_DATABASE_CA").map(PathBuf::from));
        let database = match pick(&args.database_url, env, "DATABASE_URL") {
            None => None,
            Some((v, source)) => Some(
                DatabaseUrl::parse(v.trim(), database_ca.as_deref())
                    .map_err(|e| Error::Config(format!("{source}: {e}")))?,
            ),
        };
        // At most 30 s: a delete waits for each node up to its staleness (plus a margin) and
        // never longer than a minute, so a larger value could let a 204 go out while a
        // paused node might still accept the token.
        let max_staleness = number(pick(&args.max_staleness, env, "MAX_STALENESS"), 2, 1, 30)?;
        let max_token_lifetime = number(
            pick(&args.max_token_lifetime, env, "MAX_TOKEN_LIFETIME"),
            0u32,
            0,
            MAX_TOKEN_LIFETIME_DAYS,
        )?;
        // A security switch: a value that is neither on nor off is refused, not read as off.
        let require_expiry = args.require_expiry
            || match env("PA_AUTH_REQUIRE_EXPIRY") {
                None => false,
                Some(v) => match v.trim() {
                    "1" | "true" => true,
                    "0" | "false" | "" => false,
                    other => {
                        return Err(Error::Config(format!(
                            "PA_AUTH_REQUIRE_EXPIRY: expected 1, true, 0 or false, got {other:?}"
                        )))
                    }
                },
            };
        let last_used_resolution = number(
            pick(&args.last_used_resolution, env, "LAST_USED_RESOLUTION"),
            1u64,
            1,
            86_400,
        )?;
        let audit_export_settle = number(
            pick(&args.audit_export_settle, env, "AUDIT_EXPORT_SETTLE"),
            120u64,
            0,
            3600,
        )?;
        let audit_syslog = match pick(&args.audit_syslog, env, "AUDIT_SYSLOG") {
            None => None,
            Some((v, source)) => Some(
                crate::service::syslog::Target::parse(&v)
                    .map_err(|e| Error::Config(format!("{source}: {e}")))?,
            ),
        };
        let webhooks = webhook_settings(args, env)?;
        let control_socket = control_socket(args, env, &data_dir)?;
        let revocation_api = revocation_api_settings(args, env)?;
        let log_format = match pick(&args.log_format, env, "LOG_FORMAT") {
            None => LogFormat::Text,
            Some((v, source)) => match v.trim() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(Error::Config(format!(
                        "{source}: expected text or json, got {other:?}"
                    )))
                }
            },
        };
        let log_level = match pick(&args.log_level, env, "LOG_LEVEL") {
            None => Level::Info,
            Some((v, source)) => match v.trim() {
                "info" => Level::Info,
                "warn" => Level::Warn,
                "error" => Level::Error,
                other => {
                    return Err(Error::Config(format!(
                        "{source}: expected info, warn or error, got {other:?}"
                    )))
                }
            },
        };
        Ok(Config {
            argon2_slots,
            public_url,
            database,
            max_staleness: Duration::from_secs(max_staleness),
            audit_syslog,
            webhooks,
            revocation_api,
            audit_export_settle: Duration::from_secs(audit_export_settle),
            serve_stale: args.serve_stale
                || env("PA_AUTH_SERVE_STALE").is_some_and(|v| matches!(v.trim(), "1" | "true")),
            lifetime_policy: LifetimePolicy {
                max_lifetime_days: (max_token_lifetime > 0).then_some(max_token_lifetime),
                require_expiry,
            },
            tls,
            log_format,
            log_level,
            listen,
            data_dir,
            flush_interval: Duration::from_secs(flush),
            last_used_resolution: Duration::from_secs(last_used_resolution),
            audit_retention,
            audit_failure_retention,
            http: ServerConfig {
                event_loops,
                workers,
                max_connections,
                header_timeout: Duration::from_secs(header_timeout),
                idle_timeout: Duration::from_secs(idle_timeout),
                trusted_proxies,
                control_socket,
                ..defaults
            },
        })
    }

    /// One line for `check-config` and the start-up log.
    pub fn describe(&self) -> String {
        format!(
            "configuration OK: listen {}://{}, data dir {}, control socket {}, {} event loops, {} workers, max {} connections, flush every {} s (last-used resolution {} s), header timeout {} s, idle timeout {} s, trusted proxies {}, {} argon2 slots, public URL {}, store {}, token lifetime {}, logs {:?}/{:?}",
            if self.tls.is_some() { "https" } else { "http" },
            self.listen,
            self.data_dir.display(),
            self.http
                .control_socket
                .as_ref()
                .map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
            self.http.event_loops,
            self.http.workers,
            self.http.max_connections,
            self.flush_interval.as_secs(),
            self.last_used_resolution.as_secs(),
            self.http.header_timeout.as_secs(),
            self.http.idle_timeout.as_secs(),
            self.http.trusted_proxies,
            self.argon2_slots,
            self.public_url
                .as_ref()
                .map_or_else(|| "not set".to_owned(), PublicUrl::to_string),
            self.database
                .as_ref()
                .map_or("embedded (sled)", DatabaseUrl::describe),
            match (
                self.lifetime_policy.max_lifetime_days,
                self.lifetime_policy.require_expiry
            ) {
                (Some(days), _) => format!("at most {days} days"),
                (None, true) => "expiry required".to_owned(),
                (None, false) => "unlimited".to_owned(),
            },
            self.log_format,
            self.log_level,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_env_and_flags() {
        let none = |_: &str| None;
        let c = Config::from_args(&ServeArgs::default(), &none).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.flush_interval, Duration::from_secs(10));
        let env = |k: &str| (k == "PA_AUTH_FLUSH_INTERVAL").then(|| "3".to_string());
        assert_eq!(
            Config::from_args(&ServeArgs::default(), &env)
                .unwrap()
                .flush_interval
                .as_secs(),
            3
        );
        let flags = ServeArgs {
            flush_interval: Some("7".into()),
            ..Default::default()
        };
        assert_eq!(
            Config::from_args(&flags, &env)
                .unwrap()
                .flush_interval
                .as_secs(),
            7,
            "flag wins"
        );
    }

    #[test]
    fn regression_issue_14_public_url_is_validated() {
        let none = |_: &str| None;
        let with = |url: &str| {
            Config::from_args(
                &ServeArgs {
                    public_url: Some(url.into()),
                    ..Default::default()
                },
                &none,
            )
        };
        for good in [
            "https://auth.example.com",
            "https://Auth.Example.com/",
            "http://10.0.0.5:8443",
            "HTTPS://[::1]:9000/",
        ] {
            assert!(with(good).unwrap().public_url.is_some(), "{good}");
        }
        for bad in [
            "",
            "auth.example.com",
            "ftp://auth.example.com",
            "https://",
            "https:///",
            "https://auth.example.com/admin",
            "https://auth.example.com//",
            "https://auth.example.com?x=1",
            "https://auth.example.com#f",
            "https://user@auth.example.com",
            "https://auth.example.com:",
            "https://auth.example.com:0",
            "https://auth.example.com:99999",
            "https://exa mple.com",
            "https://[::1",
        ] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains("--public-url"), "{e}");
        }
        let env = |k: &str| (k == "PA_AUTH_PUBLIC_URL").then(|| "nope".to_string());
        let e = Config::from_args(&ServeArgs::default(), &env).unwrap_err();
        assert!(e.to_string().contains("PA_AUTH_PUBLIC_URL"), "{e}");
        assert_eq!(
            Config::from_args(&ServeArgs::default(), &none)
                .unwrap()
                .public_url,
            None
        );
    }

    #[test]
    fn regression_issue_14_public_url_origin_matching() {
        let url = PublicUrl::parse("https://Auth.Example.com/").unwrap();
        assert!(url.is_https());
        assert_eq!(url.to_string(), "https://auth.example.com");
        for same in [
            &b"https://auth.example.com"[..],
            b"HTTPS://AUTH.EXAMPLE.COM",
            b"https://auth.example.com:443",
        ] {
            assert!(url.matches_origin(same));
        }
        for other in [
            &b"http://auth.example.com"[..],
            b"https://auth.example.com:8443",
            b"https://auth.example.com.evil.test",
            b"https://evil.test",
            b"null",
            b"https://auth.example.com/",
            b"",
        ] {
            assert!(
                !url.matches_origin(other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        let plain = PublicUrl::parse("http://10.0.0.5:8080").unwrap();
        assert!(!plain.is_https());
        assert!(plain.matches_origin(b"http://10.0.0.5:8080"));
        assert!(!plain.matches_origin(b"http://10.0.0.5"));
    }

    #[test]
    fn the_control_socket_defaults_to_the_runtime_dir_else_the_data_dir() {
        let args = |socket: Option<&str>| ServeArgs {
            data_dir: Some("/var/lib/pa-auth".into()),
            control_socket: socket.map(str::to_owned),
            ..Default::default()
        };
        let none = |_: &str| None;
        let socket = |a: &ServeArgs, env: EnvLookup<'_>| {
            Config::from_args(a, env).map(|c| c.http.control_socket)
        };
        assert_eq!(
            socket(&args(None), &none).unwrap(),
            Some(PathBuf::from("/var/lib/pa-auth/control.sock"))
        );
        let systemd = |k: &str| (k == "RUNTIME_DIRECTORY").then(|| "/run/pa-auth:/run/x".into());
        assert_eq!(
            socket(&args(None), &systemd).unwrap(),
            Some(PathBuf::from("/run/pa-auth/control.sock"))
        );
        assert_eq!(socket(&args(Some("none")), &systemd).unwrap(), None);
        assert_eq!(
            socket(&args(Some("/tmp/c.sock")), &none).unwrap(),
            Some(PathBuf::from("/tmp/c.sock"))
        );
        for bad in [
            "",
            "rel/c.sock",
            "/run/pa-auth/",
            &format!("/{}", "x".repeat(120)),
        ] {
            let e = socket(&args(Some(bad)), &none).unwrap_err().to_string();
            assert!(e.contains("--control-socket"), "{bad:?}: {e}");
        }
        // A data dir too deep for a socket path: no socket rather than no server.
        let deep = ServeArgs {
            data_dir: Some(PathBuf::from(format!("/{}", "d".repeat(110)))),
            ..Default::default()
        };
        assert_eq!(socket(&deep, &none).unwrap(), None);
    }

    #[test]
    fn describe_names_scheme_address_and_dir() {
        let none = |_: &str| None;
        let args = ServeArgs {
            data_dir: Some("/var/lib/pa-auth".into()),
            ..Default::default()
        };
        let text = Config::from_args(&args, &none).unwrap().describe();
        assert!(
            text.starts_with(
                "configuration OK: listen http://127.0.0.1:8080, data dir /var/lib/pa-auth"
            ),
            "{text}"
        );
    }

    #[test]
    fn errors_name_the_source() {
        let none = |_: &str| None;
        let bad = ServeArgs {
            workers: Some("zero".into()),
            ..Default::default()
        };
        let e = Config::from_args(&bad, &none).unwrap_err();
        assert!(e.to_string().contains("--workers"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let env = |k: &str| (k == "PA_AUTH_LISTEN").then(|| "nowhere".to_string());
        let e = Config::from_args(&ServeArgs::default(), &env).unwrap_err();
        assert!(e.to_string().contains("PA_AUTH_LISTEN"), "{e}");
        let bad = ServeArgs {
            flush_interval: Some("0".into()),
            ..Default::default()
        };
        assert!(Config::from_args(&bad, &none).is_err());
        let loops = |k: &str| (k == "PA_AUTH_EVENT_LOOPS").then(|| "0".to_string());
        let e = Config::from_args(&ServeArgs::default(), &loops).unwrap_err();
        assert!(e.to_string().contains("PA_AUTH_EVENT_LOOPS"), "{e}");
        let proxies = |k: &str| (k == "PA_AUTH_TRUSTED_PROXIES").then(|| "10.0.0.1/8".to_string());
        let e = Config::from_args(&ServeArgs::default(), &proxies).unwrap_err();
        assert!(e.to_string().contains("PA_AUTH_TRUSTED_PROXIES"), "{e}");
        let loops = |k: &str| (k == "PA_AUTH_EVENT_LOOPS").then(|| "3".to_string());
        assert_eq!(
            Config::from_args(&ServeArgs::default(), &loops)
                .unwrap()
                .http
                .event_loops,
            3
        );
    }

    #[test]
    fn lifetime_policy_from_flags_and_env() {
        let no_env = |_: &str| None;
        let c = Config::from_args(&ServeArgs::default(), &no_env).unwrap();
        assert_eq!(c.lifetime_policy, LifetimePolicy::default());
        let c = Config::from_args(
            &ServeArgs {
                max_token_lifetime: Some("90".into()),
                require_expiry: true,
                ..ServeArgs::default()
            },
            &no_env,
        )
        .unwrap();
        assert_eq!(c.lifetime_policy.max_lifetime_days, Some(90));
        assert!(c.lifetime_policy.require_expiry);
        assert!(c.describe().contains("at most 90 days"), "{}", c.describe());
        let env = |k: &str| match k {
            "PA_AUTH_MAX_TOKEN_LIFETIME" => Some("0".to_string()),
            "PA_AUTH_REQUIRE_EXPIRY" => Some("true".to_string()),
            _ => None,
        };
        let c = Config::from_args(&ServeArgs::default(), &env).unwrap();
        assert_eq!(c.lifetime_policy.max_lifetime_days, None, "0 = off");
        assert!(c.lifetime_policy.require_expiry);
        let typo = |k: &str| (k == "PA_AUTH_REQUIRE_EXPIRY").then(|| "yes".to_string());
        let e = Config::from_args(&ServeArgs::default(), &typo).unwrap_err();
        assert!(e.to_string().contains("PA_AUTH_REQUIRE_EXPIRY"), "{e}");
        for bad in ["-1", "36501", "ninety"] {
            let e = Config::from_args(
                &ServeArgs {
                    max_token_lifetime: Some(bad.into()),
                    ..ServeArgs::default()
                },
                &no_env,
            )
            .unwrap_err();
            assert!(e.to_string().contains("--max-token-lifetime"), "{e}");
        }
    }

    #[test]
    fn audit_retentions_default_env_flag_and_bounds() {
        let none = |_: &str| None;
        let c = Config::from_args(&ServeArgs::default(), &none).unwrap();
        assert_eq!(
            (c.audit_retention, c.audit_failure_retention),
            (100_000, 100_000)
        );
        let env = |k: &str| (k == "PA_AUTH_AUDIT_FAILURE_RETENTION").then(|| "5000".to_string());
        let c = Config::from_args(&ServeArgs::default(), &env).unwrap();
        assert_eq!(
            (c.audit_retention, c.audit_failure_retention),
            (100_000, 5_000)
        );
        let bad = ServeArgs {
            audit_failure_retention: Some("10".into()),
            ..Default::default()
        };
        let e = Config::from_args(&bad, &none).unwrap_err();
        assert!(e.to_string().contains("--audit-failure-retention"), "{e}");
    }
}
