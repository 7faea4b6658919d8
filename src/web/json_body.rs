//! Strict JSON request bodies for the admin API: `Content-Type: application/json`, a UTF-8
//! JSON object, no duplicate keys, no unknown keys, each field of the expected type. Errors
//! name the field. Depth is bounded by serde_json's recursion limit (128), size by the HTTP
//! layer (64 KiB). Pure and fuzzable (`admin_json` target).

use std::collections::BTreeMap;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::redact::redact_secrets;
use crate::service::error::{Error, FieldError};

/// A parsed JSON object whose keys were unique.
#[derive(Debug)]
pub struct JsonObject(BTreeMap<String, Value>);

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = JsonObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonObject, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate key \"{k}\"")));
                    }
                    out.insert(k, v);
                }
                Ok(JsonObject(out))
            }
        }
        d.deserialize_map(ObjectVisitor)
    }
}

/// Whether a Content-Type value is JSON (`application/json`, parameters allowed).
pub fn is_json_content_type(value: Option<&[u8]>) -> bool {
    let Some(v) = value else { return false };
    let essence = v.split(|&b| b == b';').next().unwrap_or(&[]);
    crate::http::head::trim_ows(essence).eq_ignore_ascii_case(b"application/json")
}

/// Parses a body as a JSON object with only `allowed` keys.
pub fn parse_object(
    content_type: Option<&[u8]>,
    body: &[u8],
    allowed: &[&'static str],
) -> Result<JsonObject, Error> {
    if !is_json_content_type(content_type) {
        return Err(Error::BadRequest(
            "Content-Type must be application/json".into(),
        ));
    }
    // serde's message may quote the body ("invalid type: string \"pa_…\""): a secret pasted
    // into the wrong place is redacted, not echoed.
    let object: JsonObject = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "Request body is not a valid JSON object: {}",
            redact_secrets(&e.to_string())
        ))
    })?;
    let unknown: Vec<FieldError> = object
        .0
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| FieldError {
            field: redact_secrets(&k.chars().take(100).collect::<String>()).into_owned(),
            message: "Unknown field".into(),
        })
        .collect();
    if !unknown.is_empty() {
        return Err(Error::Validation(unknown));
    }
    Ok(object)
}

impl JsonObject {
    /// A required string field.
    pub fn required_str(&self, field: &'static str) -> Result<&str, FieldError> {
        match self.0.get(field) {
            Some(Value::String(s)) => Ok(s),
            None | Some(Value::Null) => Err(FieldError::new(field, "This field is required")),
            Some(_) => Err(FieldError::new(field, "Must be a string")),
        }
    }

    /// A field of a merge-patch body: absent → `None` (leave it), `null` → `Some(None)`
    /// (clear it), a string → `Some(Some(s))`.
    pub fn patch_str(&self, field: &'static str) -> Result<Option<Option<&str>>, FieldError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s))),
            Some(_) => Err(FieldError::new(field, "Must be a string or null")),
        }
    }

    /// An optional list of strings (absent or null → None); a member that is not a string
    /// is refused with its place (`allowedCidrs[2]`). The list is bounded by the 64 KiB body.
    pub fn optional_str_list(&self, field: &'static str) -> Result<Option<Vec<&str>>, FieldError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .ok_or_else(|| FieldError::new(format!("{field}[{i}]"), "Must be a string"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(FieldError::new(
                field,
                "Must be an array of strings or null",
            )),
        }
    }

    /// Whether the field is there at all (`null` included).
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    /// Whether the object has no fields at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An optional string field (absent or null → None).
    pub fn optional_str(&self, field: &'static str) -> Result<Option<&str>, FieldError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(FieldError::new(field, "Must be a string or null")),
        }
    }

    /// A field's raw value, for shapes the typed getters do not cover (arrays).
    pub fn value(&self, field: &str) -> Option<&Value> {
        self.0.get(field)
    }

    /// An optional boolean field (absent or null → None).
    pub fn optional_bool(&self, field: &'static str) -> Result<Option<bool>, FieldError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(FieldError::new(field, "Must be true or false")),
        }
    }

    /// An optional non-negative integer field (absent or null → None); `1.0`, `-1`, `"1"`
    /// are refused.
    pub fn optional_u64(&self, field: &'static str) -> Result<Option<u64>, FieldError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.is_u64() => Ok(n.as_u64()),
            Some(_) => Err(FieldError::new(field, "Must be a non-negative integer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&[u8]> = Some(b"application/json; charset=utf-8");

    #[test]
    fn accepts_a_plain_object() {
        let o = parse_object(
            JSON,
            br#"{"name":"x","expiresAt":null}"#,
            &["name", "expiresAt"],
        )
        .unwrap();
        assert_eq!(o.required_str("name").unwrap(), "x");
        assert_eq!(o.optional_str("expiresAt").unwrap(), None);
    }

    #[test]
    fn rejects_what_it_should() {
        let allowed = &["name"];
        let status = |ct: Option<&[u8]>, body: &[u8]| {
            parse_object(ct, body, allowed)
                .unwrap_err()
                .status_and_code()
                .0
        };
        assert_eq!(status(Some(b"text/plain"), br#"{"name":"x"}"#), 400);
        assert_eq!(status(None, br#"{"name":"x"}"#), 400);
        assert_eq!(status(JSON, b"not json"), 400);
        assert_eq!(status(JSON, b"[1,2]"), 400);
        assert_eq!(status(JSON, br#"{"name":"a","name":"b"}"#), 400);
        assert_eq!(status(JSON, br#"{"name":"a","admin":true}"#), 400);
        assert_eq!(status(JSON, b"\xff\xfe"), 400);
        assert_eq!(status(JSON, br#"{"name":"\ud800"}"#), 400, "lone surrogate");
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            status(JSON, format!(r#"{{"name":{deep}}}"#).as_bytes()),
            400
        );
        let secret = crate::domain::token::PlaintextToken::generate();
        let secret = secret.expose_secret();
        for body in [
            format!("\"{secret}\""),
            format!("[\"{secret}\"]"),
            format!("{{\"{secret}\": 1}}"),
            format!("{{\"{secret}\": 1, \"{secret}\": 2}}"),
        ] {
            let e = parse_object(JSON, body.as_bytes(), allowed).unwrap_err();
            let text = format!("{e:?} {e}");
            assert!(!text.contains(secret), "{body} echoed: {text}");
        }
        let o = parse_object(JSON, br#"{"name":5}"#, allowed).unwrap();
        assert_eq!(o.required_str("name").unwrap_err().field, "name");
    }
}
