//! One request through the server's own machinery without a socket: the bytes go through the
//! same connection state machine ([`Conn`]: framing, limits) and the same handler call (panic
//! guard, header checks) as on the control socket, and the answer comes back as the bytes the
//! socket would carry. The command line's offline path uses it, so a command run offline and
//! one run against the live server go through one implementation and answer alike.

use std::time::Instant;

use super::conn::{Conn, Step};
use super::control::LOCAL_PEER;
use super::handler::{call_handler, Handler};
use super::response::DateCache;
use super::{CorrelationId, Request, ServerConfig};

/// Runs the requests in `bytes` as the control socket would for local user `uid`, and returns
/// everything the server would have written back.
pub fn exchange(handler: &dyn Handler, config: &ServerConfig, bytes: &[u8], uid: u32) -> Vec<u8> {
    let now = Instant::now();
    let mut date = DateCache::default();
    let mut conn = Conn::new(config.conn_limits(), now);
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        let mut step = conn.poll(now, &mut date);
        loop {
            match step {
                Step::Idle | Step::Rejected(_) => break,
                Step::BodyAhead => step = conn.read_body(now, &mut date),
                Step::Request => {
                    let Some((buf, head, body)) = conn.request() else {
                        break;
                    };
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
                    let response = call_handler(config, handler, &request, &correlation_id);
                    conn.respond(&response, &correlation_id, true, now, &mut date);
                    step = conn.poll(now, &mut date);
                }
            }
        }
        out.extend_from_slice(conn.output());
        let n = conn.output().len();
        conn.wrote(n, now);
        if conn.is_closed() {
            break;
        }
        if fed == bytes.len() {
            conn.peer_closed();
            if conn.is_closed() || !conn.has_output() {
                out.extend_from_slice(conn.output());
                break;
            }
            continue;
        }
        let Some(space) = conn.read_space() else {
            break;
        };
        let n = space.len().min(bytes.len() - fed);
        space[..n].copy_from_slice(&bytes[fed..fed + n]);
        conn.received(n, now);
        fed += n;
    }
    out
}
