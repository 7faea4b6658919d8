//! The response type handlers return, the correlation id every response carries, and the
//! serialisation of both onto the wire. Header names and values are checked as they are
//! written: a CR, LF or other control byte can never reach a client, whatever a handler or an
//! admin-typed name put there (the response is replaced by a 500 and the bug is logged).

use std::borrow::Cow;
use std::io::Write;

use rand::RngCore;

use serde::Serialize;

/// A request's correlation id: 32 lowercase hex characters, kept inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CorrelationId([u8; 32]);

impl CorrelationId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let mut raw = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut raw);
        let mut hex = [0u8; 32];
        for (i, b) in raw.iter().enumerate() {
            hex[2 * i] = HEX[usize::from(b >> 4)];
            hex[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        CorrelationId(hex)
    }

    /// Accepts exactly 32 lowercase hex characters (e.g. nginx's `$request_id`).
    pub fn from_hex(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        arr.iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(CorrelationId(arr))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex is ever stored.
        std::str::from_utf8(&self.0).unwrap_or("00000000000000000000000000000000")
    }
}

impl std::fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// An HTTP response: status, extra headers, body. `Date`, `Content-Length`, `Connection`,
/// `X-Correlation-Id`, and (unless set) `Cache-Control: no-store` and
/// `X-Content-Type-Options: nosniff` are added by the server.
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    headers: Headers,
    body: Cow<'static, [u8]>,
    close: bool,
}

/// A header value: a shared or owned string, or a short one kept inline, so an answer
/// (forward-auth's three identity headers) can be built without allocating.
#[derive(Debug, Clone)]
pub enum HeaderValue {
    Str(Cow<'static, str>),
    Inline(InlineValue),
}

/// Bytes a header value can hold inline.
pub const INLINE_VALUE_CAPACITY: usize = 64;

/// Up to [`INLINE_VALUE_CAPACITY`] bytes of UTF-8, in place.
#[derive(Clone, Copy)]
pub struct InlineValue {
    len: u8,
    buf: [u8; INLINE_VALUE_CAPACITY],
}

impl std::fmt::Debug for InlineValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl InlineValue {
    fn as_str(&self) -> &str {
        // Only whole UTF-8 strings are ever copied in.
        std::str::from_utf8(self.buf.get(..usize::from(self.len)).unwrap_or(&[])).unwrap_or("")
    }
}

impl HeaderValue {
    /// `s` copied in place when it fits, else owned.
    pub fn inline(s: &str) -> HeaderValue {
        match (u8::try_from(s.len()), s.len() <= INLINE_VALUE_CAPACITY) {
            (Ok(len), true) => {
                let mut buf = [0; INLINE_VALUE_CAPACITY];
                buf[..s.len()].copy_from_slice(s.as_bytes());
                HeaderValue::Inline(InlineValue { len, buf })
            }
            _ => HeaderValue::Str(Cow::Owned(s.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            HeaderValue::Str(s) => s,
            HeaderValue::Inline(t) => t.as_str(),
        }
    }
}

impl From<&'static str> for HeaderValue {
    fn from(s: &'static str) -> Self {
        HeaderValue::Str(Cow::Borrowed(s))
    }
}

impl From<String> for HeaderValue {
    fn from(s: String) -> Self {
        HeaderValue::Str(Cow::Owned(s))
    }
}

impl From<Cow<'static, str>> for HeaderValue {
    fn from(s: Cow<'static, str>) -> Self {
        HeaderValue::Str(s)
    }
}

/// Headers in place: as many as a handler here sets live in the response itself (no
/// allocation); more go to a vector.
#[derive(Debug, Clone, Default)]
struct Headers {
    first: [Option<(Cow<'static, str>, HeaderValue)>; Headers::IN_PLACE],
    more: Vec<(Cow<'static, str>, HeaderValue)>,
}

impl Headers {
    const IN_PLACE: usize = 6;

    fn push(&mut self, header: (Cow<'static, str>, HeaderValue)) {
        match self.first.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(header),
            None => self.more.push(header),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.first
            .iter()
            .flatten()
            .chain(&self.more)
            .map(|(n, v)| (n.as_ref(), v.as_str()))
    }
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Headers::default(),
            body: Cow::Borrowed(&[]),
            close: false,
        }
    }

    /// A JSON body from a serialisable value.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(status)
                .header("Content-Type", "application/json")
                .body(body),
            Err(_) => Response::new(500),
        }
    }

    /// Adds a header. Names must be tokens and values free of control bytes; a violation is
    /// a bug, reported when the response is written.
    pub fn header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<HeaderValue>,
    ) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Cow<'static, [u8]>>) -> Self {
        self.body = body.into();
        self
    }

    /// Ask the server to close the connection after this response.
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    pub fn wants_close(&self) -> bool {
        self.close
    }

    /// First value of a header set by the handler (case-insensitive name).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// All headers set by the handler.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter()
    }

    /// Whether every header can be written safely.
    pub fn headers_are_valid(&self) -> bool {
        self.headers
            .iter()
            .all(|(n, v)| is_valid_header_name(n) && is_valid_header_value(v))
    }
}

/// RFC 9110 token characters.
pub fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// No control bytes (HTAB aside), no DEL; visible ASCII, space and UTF-8 are fine.
pub fn is_valid_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Seconds since the Unix epoch, from the wall clock (for the `Date` header).
pub(crate) fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Caches the formatted `Date` value for the current second, per worker.
#[derive(Default)]
pub(crate) struct DateCache {
    second: i64,
    value: [u8; 29],
}

impl DateCache {
    pub(crate) fn get(&mut self, unix_seconds: i64) -> &[u8] {
        if self.second != unix_seconds || self.value[0] == 0 {
            self.second = unix_seconds;
            self.value = imf_fixdate(unix_seconds);
        }
        &self.value
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 §5.6.7).
fn imf_fixdate(unix_seconds: i64) -> [u8; 29] {
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(unix_seconds) else {
        return out;
    };
    const DAYS: [&[u8; 3]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    out[0..3].copy_from_slice(DAYS[usize::from(t.weekday().number_days_from_monday())]);
    let two = |n: u8| [b'0' + n / 10, b'0' + n % 10];
    out[5..7].copy_from_slice(&two(t.day()));
    out[8..11].copy_from_slice(MONTHS[usize::from(u8::from(t.month()) - 1)]);
    let year = t.year().clamp(0, 9999) as u16;
    out[12..16].copy_from_slice(&[
        b'0' + (year / 1000) as u8,
        b'0' + (year / 100 % 10) as u8,
        b'0' + (year / 10 % 10) as u8,
        b'0' + (year % 10) as u8,
    ]);
    out[17..19].copy_from_slice(&two(t.hour()));
    out[20..22].copy_from_slice(&two(t.minute()));
    out[23..25].copy_from_slice(&two(t.second()));
    out
}

/// Writes the status line, headers and (unless `head_only`) body into `out`.
pub(crate) fn serialize(
    response: &Response,
    correlation_id: &CorrelationId,
    date: &[u8],
    keep_alive: bool,
    head_only: bool,
    out: &mut Vec<u8>,
) {
    out.clear();
    // Writes into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nDate: ",
        response.status,
        reason_phrase(response.status)
    );
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\nX-Correlation-Id: ");
    out.extend_from_slice(correlation_id.as_str().as_bytes());
    if !(100..200).contains(&response.status) && response.status != 204 {
        let _ = write!(out, "\r\nContent-Length: {}", response.body.len());
    }
    out.extend_from_slice(if keep_alive {
        b"\r\nConnection: keep-alive"
    } else {
        b"\r\nConnection: close"
    });
    for (name, value) in response.headers.iter() {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    // Every response, the server's own refusals included: nothing pa-auth says is cacheable
    // or to be sniffed into another content type. A handler may set its own.
    if response.header_value("Cache-Control").is_none() {
        out.extend_from_slice(b"\r\nCache-Control: no-store");
    }
    if response.header_value("X-Content-Type-Options").is_none() {
        out.extend_from_slice(b"\r\nX-Content-Type-Options: nosniff");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only && response.status != 204 && response.status != 304 {
        out.extend_from_slice(&response.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_imf_fixdate() {
        assert_eq!(&imf_fixdate(784111777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn header_checks_reject_injection() {
        assert!(is_valid_header_name("X-PA-Token-Name"));
        assert!(!is_valid_header_name("X Bad"));
        assert!(!is_valid_header_name("X:Bad"));
        assert!(!is_valid_header_name(""));
        assert!(is_valid_header_value("a%20b"));
        assert!(!is_valid_header_value("a\r\nSet-Cookie: x"));
        assert!(!is_valid_header_value("a\nb"));
        assert!(!is_valid_header_value("a\0b"));
        assert!(!Response::new(200).header("X", "a\rb").headers_are_valid());
    }

    #[test]
    fn correlation_ids_are_32_lowercase_hex() {
        let a = CorrelationId::generate();
        let b = CorrelationId::generate();
        assert_ne!(a, b);
        assert!(CorrelationId::from_hex(a.as_str().as_bytes()).is_some());
        assert!(CorrelationId::from_hex(b"0123456789ABCDEF0123456789abcdef").is_none());
        assert!(CorrelationId::from_hex(b"short").is_none());
    }

    #[test]
    fn serialize_head_only_keeps_length() {
        let mut out = Vec::new();
        let cid = CorrelationId::generate();
        let r = Response::new(200).body(b"hello".to_vec());
        serialize(
            &r,
            &cid,
            b"Thu, 01 Jan 1970 00:00:00 GMT",
            true,
            true,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Length: 5\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
