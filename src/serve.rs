//! `pa-auth serve`: open the store, create the first admin on an empty data dir, start the
//! last-used flusher and the HTTP server, then wait for SIGTERM/SIGINT and shut down in
//! order: stop accepting → drain in-flight requests → final flush → exit 0.

use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::admin::passwords::{generate_initial_password, hash_password, INITIAL_PASSWORD_FILE};
use crate::app::{App, SharedApp};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::flusher::LastUsedFlusher;
use crate::http::Server;
use crate::last_used::LastUsedTracker;
use crate::store::{write_private_file, AdminAccount, AuditEvent, Store, StoreOptions};
use crate::time_format::now_unix;
use crate::{log_info, log_warn};

/// The version string, with the git commit when the build knew it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs the service until SIGTERM or SIGINT.
pub fn serve(config: &Config) -> Result<()> {
    // Registered first, so a signal during start-up is not lost.
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let options = StoreOptions {
        audit_cap: config.audit_retention,
        ..StoreOptions::default()
    };
    let store = Arc::new(Store::open(&config.data_dir, &options)?);
    bootstrap_admin(&store)?;
    let tracker = Arc::new(LastUsedTracker::default());
    let app = Arc::new(App::new(Arc::clone(&store), Arc::clone(&tracker)));
    let flusher = LastUsedFlusher::start(
        Arc::clone(&store),
        Arc::clone(&tracker),
        config.flush_interval,
        Arc::clone(&app.flush_status),
    )?;
    let server = Server::start(
        config.listen,
        config.http.clone(),
        SharedApp(Arc::clone(&app)),
    )
    .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.listen)))?;
    let _ = app.server_stats.set(server.stats_handle());
    log_info!(
        "pa-auth {VERSION} listening on http://{} (data dir {}, {} tokens, {} workers, flush every {} s)",
        server.local_addr(),
        config.data_dir.display(),
        store.token_count()?,
        config.http.workers,
        config.flush_interval.as_secs()
    );
    app.audit(
        now_unix(),
        AuditEvent {
            event: "server.started".into(),
            ..Default::default()
        },
    );

    let signal = signals.forever().next().unwrap_or(SIGTERM);
    let name = if signal == SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    log_info!("{name} received: stopped accepting; finishing in-flight requests");
    if !server.shutdown() {
        log_warn!("drain timed out; some connections were still busy");
    }
    app.audit(
        now_unix(),
        AuditEvent {
            event: "server.stopped".into(),
            ..Default::default()
        },
    );
    flusher.shutdown();
    store.flush()?;
    log_info!("pa-auth stopped cleanly");
    Ok(())
}

/// On a data dir with no admin: create `admin` with a random password written to
/// `<data-dir>/initial-admin-password` (0600). The password is never logged.
fn bootstrap_admin(store: &Store) -> Result<()> {
    if store.has_admins() {
        return Ok(());
    }
    let password = generate_initial_password();
    let path = store.data_dir().join(INITIAL_PASSWORD_FILE);
    // The file first: a crash before the account exists just repeats this on the next start.
    write_private_file(&path, format!("{password}\n").as_bytes())?;
    let now = now_unix();
    store.put_admin(
        "admin",
        &AdminAccount {
            password_hash: hash_password(&password)?,
            initial_password: true,
            created_at: now,
            password_changed_at: now,
        },
    )?;
    log_info!(
        "created admin user 'admin'; its initial password is in {} (mode 0600). Log in and change it; the file is removed then",
        path.display()
    );
    Ok(())
}
