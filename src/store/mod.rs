//! Storage: what the service may ask of a store, its error type, and the embedded sled
//! implementation.

pub mod error;
pub mod sled;

pub use self::sled::*;
pub use error::{Error, Result};
