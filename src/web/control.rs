//! Requests through the control socket (`pa-auth token …` on the server's host): who may send
//! them (root and the service's own user, by the uid the kernel reports), what they reach (the
//! admin API and the routes only the host may use; never forward-auth, the token API or the
//! console login) and as whom (an admin named `cli (uid N)`). The handlers are the admin API's
//! own: the socket is another way in, not another implementation.

use std::sync::atomic::{AtomicI64, Ordering};

use super::admin_auth::{AdminCredential, AdminIdentity};
use super::routes::{Guard, Resolved, Route};
use super::App;
use crate::domain::audit::{AuditEvent, AuditKind};
use crate::http::Request;
use crate::service::error::{Error, Result};

/// Which local users may use the control socket: root and the user the server runs as.
#[derive(Debug)]
pub struct ControlAccess {
    service_uid: u32,
    /// The second of the last `control.refused` event (at most one a second is written).
    last_refusal_audited: AtomicI64,
}

impl ControlAccess {
    /// Root and `service_uid` (the server's effective uid).
    pub fn new(service_uid: u32) -> ControlAccess {
        ControlAccess {
            service_uid,
            last_refusal_audited: AtomicI64::new(i64::MIN),
        }
    }

    /// Root and the uid this process runs as.
    pub fn for_this_process() -> ControlAccess {
        ControlAccess::new(rustix::process::geteuid().as_raw())
    }

    pub fn admits(&self, uid: u32) -> bool {
        uid == 0 || uid == self.service_uid
    }
}

/// Who a control-socket request is, or why it is refused. Refused: a uid that is neither
/// root nor the service's (403, audited), and any route that is not for admins or the host
/// (404: the socket serves no token checks, no console and no login).
pub(super) fn caller(
    app: &App,
    req: &Request<'_>,
    resolved: &Resolved,
    uid: u32,
    now: i64,
) -> Result<Option<AdminIdentity>> {
    let access = &app.control;
    if !access.admits(uid) {
        let last = access.last_refusal_audited.load(Ordering::Relaxed);
        if last != now
            && access
                .last_refusal_audited
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!("control socket: refused a connection from uid {uid} (only root and uid {} may use it)", access.service_uid);
            app.service.audit(
                now,
                AuditEvent {
                    actor: Some(format!("uid {uid}")),
                    reason: Some(format!("{} {}", req.method(), resolved_path(req))),
                    ..AuditEvent::of(AuditKind::ControlRefused)
                },
            );
        }
        return Err(Error::Forbidden(
            "only root and the service's own user may use the control socket",
        ));
    }
    match resolved.guard() {
        Guard::Admin | Guard::Local => Ok(Some(AdminIdentity {
            username: format!("cli (uid {uid})"),
            credential: AdminCredential::Local { uid },
        })),
        Guard::None
            if matches!(
                super::routes::route_of(req.path()),
                Route::Health | Route::Metrics | Route::OpenApi
            ) =>
        {
            Ok(None)
        }
        _ => Err(Error::NotFound),
    }
}

/// The path as the audit log may show it (a pasted secret in it is redacted).
fn resolved_path(req: &Request<'_>) -> String {
    crate::domain::redact::redact_secrets(req.path()).into_owned()
}
