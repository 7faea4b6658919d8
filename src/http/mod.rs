//! pa-auth's own small HTTP/1.1 server (replaces tiny_http; see
//! `docs/decisions/0001-own-http-layer.md`). Its whole surface: [`Request`], [`Response`],
//! [`Server`] with [`ServerConfig`], and the [`Handler`] it calls. Request heads are parsed by
//! `httparse` in [`head`], chunked bodies by [`chunked`]; both are pure and fuzzed.

mod admission;
pub mod chunked;
mod config;
pub(crate) mod conn;
mod control;
pub mod error;
mod event_loop;
pub mod forwarded;
mod handler;
pub mod head;
pub mod in_process;
mod request;
mod request_pool;
mod response;
mod server;
mod sync;
pub mod tls;
mod transport;
pub mod trusted_proxies;

pub use config::ServerConfig;
pub use control::LOCAL_PEER;
pub use error::{plain_refusal, Error, Refusal, TlsError};
pub use handler::{Exchange, Handler};
pub use request::Request;
pub use response::{
    is_valid_header_name, is_valid_header_value, CorrelationId, HeaderValue, InlineValue, Response,
};
pub use server::{Server, ServerStats, StatsHandle};
pub use trusted_proxies::{Cidr, TrustedProxies};
