//! Pure types and rules, with no I/O and no knowledge of storage or HTTP: the token format and
//! its hash, name, owner, description and expiry rules, the lifetime policy, rotation overlaps, the audit event
//! vocabulary, webhook events (which fall due when, their body and signature), token usage (its merge rules and bounds), time formatting, inline text and secret redaction. Every other layer may use this one; it uses none of them.

pub mod audit;
pub mod encoding;
pub mod leak_response;
pub mod lifetime_policy;
pub mod redact;
pub mod restrictions;
pub mod rotation;
pub mod text;
pub mod time;
pub mod token;
pub mod token_fields;
pub mod usage;
pub mod webhook;
