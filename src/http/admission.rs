//! Admission: the state every thread of a server shares ([`Shared`]: configuration, handler,
//! counters) and the open-connection and body-in-flight accounting, per client and in
//! total, that keeps any one client (or many) from taking every place. A [`ConnSlot`] is a
//! connection's place, given back when it drops.
//!
//! Who counts as one client ([`crate::client_net`]): connections per IPv4 address or IPv6
//! /64, bodies in flight per IPv4 /24 or IPv6 /48 (eight addresses of one network trickling
//! login bodies took every place an unvouched body may have and kept every admin from
//! signing in).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::config::ServerConfig;
use super::handler::Handler;

pub(super) struct Shared {
    pub(super) config: ServerConfig,
    pub(super) handler: Box<dyn Handler>,
    pub(super) open_connections: AtomicUsize,
    pub(super) bodies_in_flight: AtomicUsize,
    /// Bodies in flight that no handler vouched for (at most half the places).
    unvouched_bodies: AtomicUsize,
    pub(super) shutting_down: AtomicBool,
    /// Connections per client address, bodies per client network (only peers that are not
    /// trusted proxies), each entry removed when it reaches zero.
    per_address: Mutex<PerClient>,
}

#[derive(Debug, Default)]
struct PerClient {
    connections: HashMap<IpAddr, usize>,
    bodies: HashMap<IpAddr, usize>,
}

/// The key connections are counted under: an IPv4 address or an IPv6 /64.
fn address_key(peer: IpAddr) -> IpAddr {
    crate::client_net::host(peer)
}

/// The key bodies in flight are counted under: an IPv4 /24 or an IPv6 /48 (a site's or a
/// customer's usual allocation: a /56 holds 256 /64s, each of which would be a network).
fn network_key(peer: IpAddr) -> IpAddr {
    crate::client_net::prefix(peer, 24, 48)
}

/// Takes one from `key`'s count, removing the entry at zero.
fn release(map: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl Shared {
    pub(super) fn new(config: ServerConfig, handler: Box<dyn Handler>) -> Shared {
        Shared {
            config,
            handler,
            open_connections: AtomicUsize::new(0),
            bodies_in_flight: AtomicUsize::new(0),
            unvouched_bodies: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            per_address: Mutex::new(PerClient::default()),
        }
    }

    /// Whether a connection may stay open after an answer (not while shutting down).
    pub(super) fn keep_alive_allowed(&self) -> bool {
        !self.shutting_down.load(Ordering::Relaxed)
    }

    fn counts_per_address(&self, addr: IpAddr) -> bool {
        !self.config.trusted_proxies.contains(addr)
    }

    /// Takes an open-connection place for `peer`, or says it is over a cap.
    pub(super) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnSlot> {
        let open = self.open_connections.fetch_add(1, Ordering::SeqCst) + 1;
        let mut slot = ConnSlot {
            shared: Arc::clone(self),
            peer,
            per_address: false,
            body: false,
            unvouched: false,
        };
        // The control socket's connections (all under the unspecified address) have their own
        // budget, one address's: no flood over TCP can lock the host's operator out.
        let local = peer.is_unspecified();
        if open > self.config.max_connections && !local {
            return None;
        }
        if self.counts_per_address(peer) {
            // The last eighth of the connections is kept for the trusted proxies: a flood from
            // many addresses that reach pa-auth directly cannot lock the proxy out.
            let reserved = self.config.max_connections / 8;
            if open > self.config.max_connections - reserved && !local {
                return None;
            }
            let mut map = super::sync::lock(&self.per_address);
            let count = map.connections.entry(address_key(peer)).or_default();
            if *count >= self.config.max_connections_per_address {
                if *count == 0 {
                    map.connections.remove(&address_key(peer));
                }
                return None;
            }
            *count += 1;
            slot.per_address = true;
        }
        Some(slot)
    }
}

/// One open connection's place in the counts; given back when dropped, whatever ends the
/// connection.
pub(super) struct ConnSlot {
    shared: Arc<Shared>,
    peer: IpAddr,
    per_address: bool,
    body: bool,
    unvouched: bool,
}

impl ConnSlot {
    /// Takes a place for a body about to be received; `false` when over a cap. A body nobody
    /// vouched for ([`Handler::vouches_for_body`]) may use only half the places.
    pub(super) fn begin_body(&mut self, vouched: bool) -> bool {
        if self.body {
            return true;
        }
        let shared = &self.shared;
        let n = shared.bodies_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        if n > shared.config.max_bodies_in_flight {
            shared.bodies_in_flight.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        if !vouched {
            let u = shared.unvouched_bodies.fetch_add(1, Ordering::SeqCst) + 1;
            if u > shared.config.max_bodies_in_flight / 2 {
                shared.unvouched_bodies.fetch_sub(1, Ordering::SeqCst);
                shared.bodies_in_flight.fetch_sub(1, Ordering::SeqCst);
                return false;
            }
        }
        if self.per_address {
            let allowed = {
                let mut map = super::sync::lock(&shared.per_address);
                let count = map.bodies.entry(network_key(self.peer)).or_default();
                let ok = *count < shared.config.max_bodies_per_address;
                if ok {
                    *count += 1;
                } else if *count == 0 {
                    map.bodies.remove(&network_key(self.peer));
                }
                ok
            };
            if !allowed {
                shared.bodies_in_flight.fetch_sub(1, Ordering::SeqCst);
                if !vouched {
                    shared.unvouched_bodies.fetch_sub(1, Ordering::SeqCst);
                }
                return false;
            }
        }
        self.body = true;
        self.unvouched = !vouched;
        true
    }

    /// The body's request was answered (or the connection ended).
    pub(super) fn end_body(&mut self) {
        if !std::mem::take(&mut self.body) {
            return;
        }
        let shared = &self.shared;
        shared.bodies_in_flight.fetch_sub(1, Ordering::SeqCst);
        if std::mem::take(&mut self.unvouched) {
            shared.unvouched_bodies.fetch_sub(1, Ordering::SeqCst);
        }
        if self.per_address {
            release(
                &mut super::sync::lock(&shared.per_address).bodies,
                network_key(self.peer),
            );
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.end_body();
        let shared = &self.shared;
        shared.open_connections.fetch_sub(1, Ordering::SeqCst);
        if self.per_address {
            release(
                &mut super::sync::lock(&shared.per_address).connections,
                address_key(self.peer),
            );
        }
    }
}
