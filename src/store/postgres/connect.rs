//! Reaching the database: the URL (rust-postgres understands several hosts and
//! `target_session_attrs=read-write`, for a Patroni or primary/replica set-up), and TLS
//! through rustls with the site's CA (`--database-ca`), verified, never "encrypt but trust
//! anyone". The password in the URL is never shown: [`DatabaseUrl::describe`] leaves it out.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use postgres::{Client, NoTls};

use crate::store::error::{Error, Result};

/// Sent data unacknowledged this long fails the connection (`tcp_user_timeout`).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle connection is probed after this long (`keepalives_idle`)…
const KEEPALIVES_IDLE: Duration = Duration::from_secs(10);
/// …then this often (`keepalives_interval`), until TCP_USER_TIMEOUT.
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(3);
/// rust-postgres' own `keepalives_idle` when the URL gives none.
const CLIENT_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// A parsed `--database-url`, with how to secure the connection.
#[derive(Clone)]
pub struct DatabaseUrl {
    config: postgres::Config,
    tls: Option<Arc<rustls::ClientConfig>>,
    shown: String,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl DatabaseUrl {
    /// Parses a `postgres://` URL (or key=value string); `ca`: a PEM file of the CA(s) the
    /// server's certificate must chain to (TLS is used whenever it is given).
    pub fn parse(url: &str, ca: Option<&Path>) -> std::result::Result<DatabaseUrl, String> {
        // libpq's verify-ca / verify-full are what pa-auth always does with a CA (rustls
        // verifies the chain and the host name); rust-postgres knows only "require".
        let mut verify_asked = false;
        let url = ["sslmode=verify-full", "sslmode=verify-ca"].iter().fold(
            url.to_owned(),
            |url, mode| {
                if url.contains(mode) {
                    verify_asked = true;
                    url.replace(mode, "sslmode=require")
                } else {
                    url
                }
            },
        );
        let mut config = postgres::Config::from_str(&url).map_err(|e| {
            // The error never repeats the URL (it may hold a password).
            format!("--database-url is not a PostgreSQL connection URL: {e}")
        })?;
        if config.get_hosts().iter().any(|h| match h {
            Host::Tcp(h) => h.contains('@'),
            Host::Unix(_) => false,
        }) {
            // `postgres://u:pa@ss@host/db`: the client splits at the first '@', and the rest of
            // the password would be taken (and shown) as a host name.
            return Err(
                "--database-url has an '@' after the user's '@': percent-encode an '@' \
                        in the password as %40"
                    .into(),
            );
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A database host lost, cut off from the network or paused as a VM answers nothing,
        // not even a reset: a connection waiting on it would wait out the kernel's
        // retransmissions (about 15 minutes; an idle one, 2 h of keepalive), and the node
        // would neither reconnect nor follow a promoted replica meanwhile. Unless the URL says
        // otherwise, unacknowledged data or keepalives fail the connection after seconds.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if config.get_keepalives_idle() == CLIENT_KEEPALIVES_IDLE {
            config.keepalives_idle(KEEPALIVES_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVES_INTERVAL);
        }
        if config.get_application_name().is_none() {
            config.application_name("pa-auth");
        }
        let tls = match ca {
            Some(_) if config.get_ssl_mode() == SslMode::Disable => {
                return Err("--database-ca asks for TLS but --database-url says \
                            sslmode=disable: drop one of them"
                    .into())
            }
            Some(ca) => {
                // With a CA, TLS is required (never libpq's "prefer": a server, or anyone in
                // between, refusing TLS would get a plaintext session).
                config.ssl_mode(SslMode::Require);
                Some(Arc::new(crate::tls_client::config_trusting(
                    ca,
                    "--database-ca",
                )?))
            }
            None if config.get_ssl_mode() == SslMode::Require || verify_asked => {
                return Err(
                    "--database-url asks for TLS (sslmode=require or verify-*): give the CA \
                     that signed the database's certificate with --database-ca"
                        .into(),
                )
            }
            None => None,
        };
        // The port each host is reached on, as the client picks it: its own, else the first
        // one given (`host=db1,db2 port=5433` is 5433 for both), else 5432.
        let ports = config.get_ports();
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                match host {
                    Host::Tcp(h) => format!("{h}:{port}"),
                    Host::Unix(p) => format!("{}:{port}", p.display()),
                }
            })
            .collect();
        let shown = format!(
            "postgres://{}@{}/{}{}",
            config.get_user().unwrap_or("?"),
            hosts.join(","),
            config.get_dbname().unwrap_or(""),
            if tls.is_some() { " (TLS)" } else { "" }
        );
        Ok(DatabaseUrl { config, tls, shown })
    }

    /// User, hosts and database, without the password.
    pub fn describe(&self) -> &str {
        &self.shown
    }

    pub(super) fn connect(&self) -> Result<Client> {
        match &self.tls {
            Some(tls) => self
                .config
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(
                    (**tls).clone(),
                )),
            None => self.config.connect(NoTls),
        }
        .map_err(Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let url = DatabaseUrl::parse(
            "postgres://pa:s3cret@db1:5433,db2/tokens?target_session_attrs=read-write",
            None,
        )
        .unwrap();
        assert_eq!(url.describe(), "postgres://pa@db1:5433,db2:5432/tokens");
        assert!(!format!("{url:?}").contains("s3cret"));
        let err =
            DatabaseUrl::parse("postgres://pa:s3cret@db/x?sslmode=require", None).unwrap_err();
        assert!(
            err.contains("--database-ca") && !err.contains("s3cret"),
            "{err}"
        );
        let err = DatabaseUrl::parse("postgres://pa:s3cret@db/x?nonsense=1", None).unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        // Outside attack: an unencoded '@' in the password put its rest in the "host" shown.
        let err = DatabaseUrl::parse("postgres://pa:Pass@Word@Secret9@db/x", None).unwrap_err();
        assert!(
            err.contains("%40") && !err.contains("Word") && !err.contains("Secret9"),
            "{err}"
        );
        let err =
            DatabaseUrl::parse("postgres://pa:s3cret@db/x?sslmode=verify-full", None).unwrap_err();
        assert!(err.contains("--database-ca"), "{err}");
    }

    /// A lost database host (no reset, no answer) held a node's connections for the kernel's
    /// retransmission time, about 15 minutes, before it tried the next host of the URL.
    #[test]
    fn a_silent_host_fails_the_connection_in_seconds_unless_the_url_says_otherwise() {
        let url = DatabaseUrl::parse(
            "postgres://pa@db1,db2/tokens?target_session_attrs=read-write",
            None,
        )
        .unwrap();
        assert_eq!(url.config.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert!(url.config.get_keepalives());
        assert_eq!(url.config.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(
            url.config.get_keepalives_interval(),
            Some(KEEPALIVES_INTERVAL)
        );
        let url = DatabaseUrl::parse(
            "postgres://pa@db/tokens?tcp_user_timeout=30&keepalives_idle=60&keepalives_interval=7",
            None,
        )
        .unwrap();
        assert_eq!(
            url.config.get_tcp_user_timeout(),
            Some(&Duration::from_secs(30))
        );
        assert_eq!(url.config.get_keepalives_idle(), Duration::from_secs(60));
        assert_eq!(
            url.config.get_keepalives_interval(),
            Some(Duration::from_secs(7))
        );
        // rust-postgres' default is what the URL-less constant says it is.
        assert_eq!(
            postgres::Config::new().get_keepalives_idle(),
            CLIENT_KEEPALIVES_IDLE
        );
    }

    /// The log named the wrong port for every host after the first when one `port` was given
    /// for several hosts: the client reaches them all on that port.
    #[test]
    fn every_host_is_shown_with_the_port_it_is_reached_on() {
        let url = DatabaseUrl::parse(
            "host=db1,db2 port=5433 user=pa dbname=tokens target_session_attrs=read-write",
            None,
        )
        .unwrap();
        assert_eq!(url.describe(), "postgres://pa@db1:5433,db2:5433/tokens");
        let url = DatabaseUrl::parse("host=db1,db2 user=pa dbname=tokens", None).unwrap();
        assert_eq!(url.describe(), "postgres://pa@db1:5432,db2:5432/tokens");
    }
}
