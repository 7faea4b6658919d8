//! Storage: what the service may ask of a store, and the embedded sled implementation.

pub mod sled;
pub use self::sled::*;
