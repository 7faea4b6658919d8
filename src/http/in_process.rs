//! One request through the server's own machinery without a socket: the bytes go through the
//! same connection state machine ([`Conn`]: framing, limits) and the same handler call (panic
//! guard, header checks) as on the control socket, and the answer comes back as the bytes the
//! socket would carry. The command line's offline path uses it, so a command run offline and
//! one run against the live server go through one implementation and answer alike.

use std::time::Instant;

use super::conn::{feed, Conn};
use super::control::LOCAL_PEER;
use super::handler::{call_handler, Handler};
use super::{CorrelationId, Request, ServerConfig};

/// Runs the requests in `bytes` as the control socket would for local user `uid`, and returns
/// everything the server would have written back.
pub fn exchange(handler: &dyn Handler, config: &ServerConfig, bytes: &[u8], uid: u32) -> Vec<u8> {
    let mut conn = Conn::new(config.conn_limits(), Instant::now());
    feed(
        &mut conn,
        bytes,
        &mut |_| usize::MAX,
        true,
        &mut |buf, head, body| {
            let correlation_id = CorrelationId::generate();
            let request = Request {
                buf,
                head,
                body: buf.get(body).unwrap_or(&[]),
                body_pending: false,
                peer: LOCAL_PEER,
                local_uid: Some(uid),
                correlation_id,
                tls: false,
                trusted_proxies: &config.trusted_proxies,
            };
            (
                call_handler(config, handler, &request, &correlation_id),
                correlation_id,
            )
        },
    )
}
