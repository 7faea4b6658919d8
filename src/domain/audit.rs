//! The audit vocabulary: every kind of event pa-auth records ([`AuditKind`], the one list of
//! names), which class of evidence each is (and so which retention it falls under), and the
//! event as stored and shown ([`AuditEvent`]).

use serde::{Deserialize, Serialize};

/// Every kind of audit event pa-auth writes: the one list of names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    ServerStarted,
    ServerStopped,
    TokenCreated,
    TokenDeleted,
    /// Name, owner or description edited (`PATCH /admin/api/tokens/{id}`, `token update`).
    TokenUpdated,
    TokenLookup,
    /// A new secret for a token (`POST /admin/api/tokens/{id}/rotate`, `token rotate`).
    TokenRotated,
    /// A rotation's previous secret stopped working; `reason` says why.
    TokenPreviousSecretExpired,
    /// A leak response: pasted or reported secrets revoked (`POST /admin/api/tokens/revoke`,
    /// the revocation API, `token revoke`); counts only, never a value. Each token deleted
    /// is its own `token.deleted`.
    TokenRevoke,
    /// A bulk delete by filter (`POST /admin/api/tokens/bulk-delete`, `token bulk-delete`):
    /// the filter and the count. Each token deleted is its own `token.deleted`.
    TokenBulkDelete,
    AdminLogin,
    AdminPasswordChanged,
    BackupCreated,
    AuthFailed,
    AdminLoginFailed,
    AuthTokenOnAdminRoute,
    /// A token's first use from an address it was not known to be used from (its usage's
    /// last ten); capped per token and per flush (`service::auth::usage`).
    TokenNewAddress,
    /// A valid token used from outside its allowed networks (aggregated like `auth.failed`).
    AuthDeniedNetwork,
    /// A read-only token for a method other than GET/HEAD/OPTIONS, or an unknown one
    /// (aggregated like `auth.failed`).
    AuthDeniedReadOnly,
    /// A connection to the control socket from a uid other than root's or the service's
    /// (at most one a second, with the uid as `actor`).
    ControlRefused,
}

/// Which tree an event is kept in, and so which events can evict it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditClass {
    /// Needs an authenticated admin, or is the server's own start/stop.
    Lifecycle,
    /// Anyone who can reach the port can cause it, as often as they like.
    Failure,
}

impl AuditKind {
    pub const ALL: [AuditKind; 20] = [
        AuditKind::ServerStarted,
        AuditKind::ServerStopped,
        AuditKind::TokenCreated,
        AuditKind::TokenDeleted,
        AuditKind::TokenUpdated,
        AuditKind::TokenLookup,
        AuditKind::TokenRotated,
        AuditKind::TokenPreviousSecretExpired,
        AuditKind::TokenRevoke,
        AuditKind::TokenBulkDelete,
        AuditKind::AdminLogin,
        AuditKind::AdminPasswordChanged,
        AuditKind::BackupCreated,
        AuditKind::AuthFailed,
        AuditKind::AdminLoginFailed,
        AuditKind::AuthTokenOnAdminRoute,
        AuditKind::TokenNewAddress,
        AuditKind::AuthDeniedNetwork,
        AuditKind::AuthDeniedReadOnly,
        AuditKind::ControlRefused,
    ];

    /// The `event` field's value.
    pub fn name(self) -> &'static str {
        match self {
            AuditKind::ServerStarted => "server.started",
            AuditKind::ServerStopped => "server.stopped",
            AuditKind::TokenCreated => "token.created",
            AuditKind::TokenDeleted => "token.deleted",
            AuditKind::TokenUpdated => "token.updated",
            AuditKind::TokenLookup => "token.lookup",
            AuditKind::TokenRotated => "token.rotated",
            AuditKind::TokenPreviousSecretExpired => "token.previous_secret_expired",
            AuditKind::TokenRevoke => "token.revoke",
            AuditKind::TokenBulkDelete => "token.bulk_delete",
            AuditKind::AdminLogin => "admin.login",
            AuditKind::AdminPasswordChanged => "admin.password_changed",
            AuditKind::BackupCreated => "backup.created",
            AuditKind::AuthFailed => "auth.failed",
            AuditKind::AdminLoginFailed => "admin.login_failed",
            AuditKind::AuthTokenOnAdminRoute => "auth.token_on_admin_route",
            AuditKind::TokenNewAddress => "token.new_address",
            AuditKind::AuthDeniedNetwork => "auth.denied_network",
            AuditKind::AuthDeniedReadOnly => "auth.denied_read_only",
            AuditKind::ControlRefused => "control.refused",
        }
    }

    pub fn from_name(name: &str) -> Option<AuditKind> {
        AuditKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn class(self) -> AuditClass {
        match self {
            AuditKind::ServerStarted
            | AuditKind::ServerStopped
            | AuditKind::TokenCreated
            | AuditKind::TokenDeleted
            | AuditKind::TokenUpdated
            | AuditKind::TokenLookup
            | AuditKind::TokenRotated
            | AuditKind::TokenPreviousSecretExpired
            | AuditKind::TokenRevoke
            | AuditKind::TokenBulkDelete
            | AuditKind::AdminLogin
            | AuditKind::AdminPasswordChanged
            | AuditKind::BackupCreated => AuditClass::Lifecycle,
            AuditKind::AuthFailed
            | AuditKind::AdminLoginFailed
            | AuditKind::AuthTokenOnAdminRoute
            // Whoever holds a token causes it, as often as they have addresses.
            | AuditKind::TokenNewAddress
            | AuditKind::AuthDeniedNetwork
            | AuditKind::AuthDeniedReadOnly
            // Any local user who can reach the socket (when an operator widened its mode).
            | AuditKind::ControlRefused => AuditClass::Failure,
        }
    }
}

impl From<AuditKind> for String {
    fn from(kind: AuditKind) -> String {
        kind.name().to_owned()
    }
}

/// The class of an event named `event`; unknown names are failures (see the module doc).
pub fn class_of(event: &str) -> AuditClass {
    AuditKind::from_name(event).map_or(AuditClass::Failure, AuditKind::class)
}

/// One audit event.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Opaque, unique, time-ordered id (also the pagination cursor).
    #[serde(default)]
    pub id: String,
    /// RFC 3339 UTC.
    pub at: String,
    /// An [`AuditKind`] name: `token.created`, `token.deleted`, `admin.login`, ...
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_name: Option<String>,
    /// A client address, or for failures aggregated per network a CIDR prefix
    /// (`203.0.113.0/24`, `2001:db8:1:2::/64`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For aggregated events (`auth.failed`): how many in the interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// For `token.updated`: which fields changed (`name`, `owner`, `description`), never
    /// their values: the event stays bounded and one line whatever an admin typed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<Vec<String>>,
}

impl AuditEvent {
    /// An event of `kind`, every other field empty (`at` and `id` are set on append).
    pub fn of(kind: AuditKind) -> AuditEvent {
        AuditEvent {
            event: kind.name().to_owned(),
            ..AuditEvent::default()
        }
    }

    /// The same event, naming who did it.
    pub fn by(self, actor: &Actor) -> AuditEvent {
        AuditEvent {
            actor: Some(actor.name.clone()),
            remote_addr: actor.remote_addr.clone(),
            ..self
        }
    }
}

/// Who asks for a change, as the audit log names them: an admin (with the client's address)
/// or the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub remote_addr: Option<String>,
}

impl Actor {
    /// An admin of the admin API or console, from `remote_addr`.
    pub fn admin(name: &str, remote_addr: std::net::IpAddr) -> Actor {
        Actor {
            name: name.to_owned(),
            remote_addr: Some(remote_addr.to_string()),
        }
    }

    /// The command line as local user `uid`: through the control socket, or offline (the same
    /// handlers, in-process).
    pub fn local_cli(uid: u32) -> Actor {
        Actor {
            name: format!("cli (uid {uid})"),
            remote_addr: None,
        }
    }
}
