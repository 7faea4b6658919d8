//! `pa-auth serve`: open the store, create the first admin on an empty data dir, start the
//! last-used flusher and the HTTP server, then wait for SIGTERM/SIGINT and shut down in
//! order: stop accepting → drain in-flight requests → final flush → save the index snapshot
//! (for a fast next start) → exit 0.

use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::Config;
use crate::domain::audit::{AuditEvent, AuditKind};
use crate::domain::time::now_unix;
use crate::http::tls::{load_server_config, TlsContext};
use crate::http::{Server, ServerConfig};
use crate::service::{Error, Result, Service};
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::sled::{SledStore, StoreOptions};
use crate::store::Store;
use crate::systemd_notify::notify;
use crate::web::{App, SharedApp};

/// The version string.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (`unknown` outside a checkout).
pub const GIT_COMMIT: &str = env!("PA_AUTH_GIT_COMMIT");

/// Runs the service until SIGTERM or SIGINT.
pub fn serve(config: &Config) -> Result<()> {
    // Registered first, so a signal during start-up is not lost.
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    crate::logging::configure(config.log_format, config.log_level);
    // Our stderr is the log: long operations (an upgrade at open, an online backup) log
    // their progress rather than redraw a line between other threads' log lines.
    crate::progress::report_to_log_only();
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(TlsContext::new(
            load_server_config(&files.cert, &files.key)
                .map_err(|e| Error::Config(e.to_string()))?,
        ))),
        None => None,
    };
    // A data dir another user owns or can write could have links planted in it, which the
    // server (root, perhaps) would follow: refused.
    let untrusted = |what: &str, why: String| Error::Config(format!("refusing {what}: {why}"));
    // Checked before anything touches it (making it 0700 would follow a link), and from here
    // on only the real path is used: what was checked cannot change under it.
    let mut config = config.clone();
    config.data_dir = if std::fs::symlink_metadata(&config.data_dir).is_ok() {
        crate::trust::server_dir(&config.data_dir).map_err(|why| untrusted("the data dir", why))?
    } else {
        let made = crate::trust::create_dir(&config.data_dir)
            .map_err(|why| untrusted("to create the data dir", why))?;
        crate::trust::server_dir(&made).map_err(|why| untrusted("the data dir", why))?
    };
    if let Some(socket) = config.http.control_socket.clone() {
        let dir = match socket.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        let real = crate::trust::server_dir(dir)
            .map_err(|why| untrusted("the control socket's directory", why))?;
        let name = socket.file_name().unwrap_or_default();
        config.http.control_socket = Some(real.join(name));
    }
    let config = &config;
    // The embedded store locks its data dir when it opens; a cluster node locks its own here.
    let _data_dir_lock = match config.database {
        Some(_) => {
            crate::store::create_private_dir(&config.data_dir)?;
            Some(crate::store::sled::lock_data_dir(&config.data_dir)?)
        }
        None => None,
    };
    let store = open_store(config)?;
    let mut service = Service::with_max_staleness(
        Arc::clone(&store),
        config.argon2_slots,
        config.max_staleness,
    )
    .with_lifetime_policy(config.lifetime_policy)
    .with_audit_export_settle(config.audit_export_settle);
    if let Some(settings) = &config.webhooks {
        service = service.with_webhooks(
            crate::service::webhooks::Webhooks::new(settings.clone()).map_err(Error::Config)?,
        );
        log::info!(
            "sending token lifecycle webhooks to {}",
            settings
                .receivers
                .iter()
                .map(crate::service::webhooks::ReceiverUrl::shown)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let service = Arc::new(service);
    if let Some(target) = &config.audit_syslog {
        service.copy_audit_to(crate::service::syslog::SyslogSink::start(target.clone())?);
        log::info!("sending a copy of every audit event to {target}");
    }
    service.bootstrap_admin()?;
    if config.serve_stale {
        service.serve_stale();
    }
    let follower = service.start_follower()?;
    let mut app = App::new(Arc::clone(&service), config.public_url.clone());
    if let Some(revocation) = &config.revocation_api {
        crate::web::routes::set_revocation_api_prefix(&revocation.prefix);
        app = app.with_revocation_api(crate::web::leak_response::RevocationApi::new(
            &revocation.credential,
        ));
        log::info!(
            "token revocation API (GitLab-compatible) at {}/v1/revoke_tokens",
            revocation.prefix
        );
    }
    let app = Arc::new(app);
    let flusher = service.start_maintenance(config.flush_interval, config.last_used_resolution)?;
    let webhook_sender = service.start_webhook_sender()?;
    let http = ServerConfig {
        tls: tls.clone(),
        refusal: crate::web::error::refusal,
        ..config.http.clone()
    };
    let server = Server::start(config.listen, http, SharedApp(Arc::clone(&app))).map_err(|e| {
        Error::Config(format!(
            "cannot listen on {}{}: {e}",
            config.listen,
            config
                .http
                .control_socket
                .as_ref()
                .map_or_else(String::new, |p| format!(" and {}", p.display()))
        ))
    })?;
    let _ = app.server_stats.set(server.stats_handle());
    let socket_link = link_control_socket(config);
    log::info!(
        "pa-auth {VERSION} ({GIT_COMMIT}) listening on {}://{} (data dir {}, control socket {}, {} tokens, {} workers, flush every {} s)",
        if tls.is_some() { "https" } else { "http" },
        server.local_addr(),
        config.data_dir.display(),
        config
            .http
            .control_socket
            .as_ref()
            .map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
        store.token_count()?,
        config.http.workers,
        config.flush_interval.as_secs()
    );
    service.audit(now_unix(), AuditEvent::of(AuditKind::ServerStarted));
    notify(&format!(
        "READY=1\nSTATUS=listening on {}",
        server.local_addr()
    ));

    let signal = wait_for_stop(&mut signals, tls.as_deref(), config);
    let name = if signal == SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    notify("STOPPING=1\nSTATUS=draining in-flight requests");
    log::info!("{name} received: stopped accepting; finishing in-flight requests");
    if !server.shutdown() {
        log::warn!("drain timed out; some connections were still busy");
    }
    if let Some(link) = socket_link {
        if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(link);
        }
    }
    service.audit(now_unix(), AuditEvent::of(AuditKind::ServerStopped));
    flusher.shutdown();
    // The outbox is durable: stopping only ends the delivery in flight and frees the lease.
    if let Some(sender) = webhook_sender {
        sender.shutdown();
    }
    // After the last audit events (the stop, the final aggregated failures).
    service.close_audit_copy();
    drop(follower);
    store.leave();
    store.flush()?;
    if let Err(e) = store.save_for_restart() {
        log::warn!("could not save the index snapshot ({e}); the next start scans the store");
    }
    log::info!("pa-auth stopped cleanly");
    Ok(())
}

/// Blocks until SIGTERM or SIGINT; SIGHUP reloads the TLS certificate in between.
fn wait_for_stop(signals: &mut Signals, tls: Option<&TlsContext>, config: &Config) -> i32 {
    for signal in signals.forever() {
        if signal != SIGHUP {
            return signal;
        }
        match (tls, &config.tls) {
            (Some(ctx), Some(files)) => match ctx.reload(&files.cert, &files.key) {
                Ok(()) => log::info!(
                    "SIGHUP: TLS certificate reloaded from {}",
                    files.cert.display()
                ),
                Err(e) => {
                    log::warn!("SIGHUP: TLS reload failed, keeping the current certificate: {e}")
                }
            },
            _ => log::info!("SIGHUP ignored: no TLS certificate to reload"),
        }
    }
    SIGTERM
}

/// The store the configuration names: PostgreSQL with `--database-url`, else the embedded
/// sled store in the data dir.
fn open_store(config: &Config) -> Result<Arc<dyn Store>> {
    if let Some(url) = &config.database {
        let options = PgOptions {
            create_schema: true,
            local_dir: config.data_dir.clone(),
            audit_cap: config.audit_retention,
            audit_failure_cap: config.audit_failure_retention,
            max_staleness: config.max_staleness,
            serving: true,
        };
        log::info!("using the database {}", url.describe());
        return Ok(Arc::new(PgStore::open(url, &options)?));
    }
    let options = StoreOptions {
        audit_cap: config.audit_retention,
        audit_failure_cap: config.audit_failure_retention,
        index_tokens: true,
        // A schema upgrade at open can take minutes: keep systemd from timing the start out.
        on_progress: |progress| {
            notify(&format!(
                "EXTEND_TIMEOUT_USEC=60000000\nSTATUS={}",
                progress.line()
            ))
        },
        ..StoreOptions::default()
    };
    Ok(Arc::new(SledStore::open(&config.data_dir, &options)?))
}

/// With the control socket outside the data dir (systemd's `/run/pa-auth`), a link to it as
/// `<data-dir>/control.sock`: the CLI finds the socket of the server that holds a data dir
/// there, and never another server's. Removed at shutdown; one left by `kill -9` points at
/// nothing that answers, and the next start replaces it.
fn link_control_socket(config: &Config) -> Option<std::path::PathBuf> {
    let socket = config.http.control_socket.as_ref()?;
    let link = config.data_dir.join(crate::config::CONTROL_SOCKET_NAME);
    if *socket == link {
        return None;
    }
    let _ = std::fs::remove_file(&link);
    match std::os::unix::fs::symlink(socket, &link) {
        Ok(()) => Some(link),
        Err(e) => {
            log::warn!(
                "cannot link {} to the control socket {}: {e}; the CLI needs --socket {} here",
                link.display(),
                socket.display(),
                socket.display()
            );
            None
        }
    }
}
