//! The use-cases shared by the web layer and the CLI, owning the invariants: tokens (create,
//! delete, list, lookup, with their audit events and last-used bookkeeping), API-token
//! authentication, admins (passwords, sessions, login throttle), backup, and the periodic
//! maintenance thread. It reaches storage only through [`crate::store`] and knows nothing of
//! HTTP.

pub mod admins;
pub mod auth;
pub mod backup;
pub mod error;
pub mod maintenance;
