//! The properties the fuzz targets check, as plain functions that panic on a violation. The
//! cargo-fuzz targets in `fuzz/` call them with generated inputs; a normal test replays every
//! committed corpus file through them, so the README's test command covers the corpora
//! without a nightly toolchain.

use crate::domain::leak_response::read_pasted;
use crate::domain::token::{is_well_formed, PlaintextToken, TokenHash, RANDOM_LEN, TOKEN_LEN};
use crate::domain::token_fields::{
    parse_expires_at, validate_description, validate_name, validate_owner, MAX_DESCRIPTION_CHARS,
    MAX_NAME_CHARS, MAX_OWNER_CHARS,
};
use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{parse_request_head, Framing, HeadLimits};
use crate::service::auth::bearer_header::{
    is_token68, parse_bearer, parse_bearer_value, MAX_TOKEN_BYTES,
};
use crate::service::error::AuthFailure;
use crate::web::json_body::parse_object;

const LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 16 * 1024,
    max_body_bytes: 64 * 1024,
};

/// Request head + framing: never panics; a parsed head is self-consistent and stable under
/// re-parsing its own bytes; a chunked body after it decodes in place within the cap; and
/// the connection state machine serves the bytes the same way in any split
/// ([`check_connection_splits`]).
pub fn check_request_head(data: &[u8]) {
    check_connection_splits(data);
    let Ok(Some(head)) = parse_request_head(data, &LIMITS) else {
        return;
    };
    assert!(head.head_len <= data.len() && head.head_len <= LIMITS.max_head_bytes);
    assert!(head.header_count <= crate::http::head::MAX_HEADERS);
    for h in &head.headers[..head.header_count] {
        assert!(h.name.start as usize + h.name.len as usize <= head.head_len);
        assert!(h.value.start as usize + h.value.len as usize <= head.head_len);
        assert!(!h.name.of(data).is_empty());
    }
    let again = parse_request_head(&data[..head.head_len], &LIMITS);
    let Ok(Some(again)) = again else {
        panic!("head does not re-parse from its own bytes")
    };
    assert_eq!(again.framing, head.framing);
    assert_eq!(again.head_len, head.head_len);
    match head.framing {
        Framing::Length(n) => assert!(n > 0 && n <= LIMITS.max_body_bytes),
        Framing::Chunked => {
            let mut buf = data[head.head_len..].to_vec();
            let end = buf.len();
            let (mut read, mut write) = (0, 0);
            let mut decoder = ChunkedDecoder::new(LIMITS.max_body_bytes);
            if decoder.decode(&mut buf, &mut read, &mut write, end).is_ok() {
                assert!(write <= read && read <= end);
                assert!(write as u64 <= LIMITS.max_body_bytes);
            }
        }
        Framing::Empty => {}
    }
}

/// The connection state machine: a byte stream fed in arbitrary splits (sizes drawn from the
/// input's first two bytes) gives exactly the requests and answers of the same stream fed
/// whole: framing, pipelining and errors never depend on how TCP cut the bytes.
pub fn check_connection_splits(data: &[u8]) {
    let (seed, stream) = match data {
        [a, b, rest @ ..] => (u32::from(*a) << 8 | u32::from(*b), rest),
        _ => return,
    };
    let whole = crate::http::conn::serve_stream(stream, &mut |_| usize::MAX);
    let mut state = seed | 1;
    let split = crate::http::conn::serve_stream(stream, &mut |_| {
        // xorshift: cheap, deterministic, any size from 1 to 64.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        1 + (state % 64) as usize
    });
    assert_eq!(whole, split, "the split changed what the connection did");
}

/// Routing is a function of the path alone (issue 14): `data` is split at its first 0xFF
/// byte into a target and a query; whenever `GET <target>?<query>` parses, it is routed
/// exactly like `GET <target>`, and its path is the target's. The query may hold anything a
/// request line allows, `://`, `/..`, `%2e`, `?`, `#`.
pub fn check_routing(data: &[u8]) {
    let split = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let (target, query) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    let head_of = |query: Option<&[u8]>| {
        let mut raw = b"GET ".to_vec();
        raw.extend_from_slice(target);
        if let Some(q) = query {
            raw.push(b'?');
            raw.extend_from_slice(q);
        }
        raw.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        raw
    };
    let with_query = head_of(Some(query));
    let Ok(Some(head)) = parse_request_head(&with_query, &LIMITS) else {
        return;
    };
    let path = head.path(&with_query);
    let route = crate::web::routes::route_of(std::str::from_utf8(path).unwrap_or(""));
    let without = head_of(None);
    match parse_request_head(&without, &LIMITS) {
        Ok(Some(bare)) => {
            assert_eq!(bare.path(&without), path, "the query changed the path");
            let bare_path = bare.path(&without);
            let bare_route =
                crate::web::routes::route_of(std::str::from_utf8(bare_path).unwrap_or(""));
            assert_eq!(route, bare_route, "the query changed the route");
        }
        // The target alone is not a valid target (e.g. empty): then neither may the query
        // make it one that reaches a route.
        _ => assert_eq!(
            route,
            crate::web::routes::Route::NotFound,
            "a query made an invalid target routable"
        ),
    }
    // Only a target that is one request-line token (no space or line break: the fuzzer once
    // put a whole `HTTP/1.0` request line and a header inside the "target") is the path up
    // to its first `?`.
    if target.starts_with(b"/") && !target.iter().any(|&b| matches!(b, b' ' | b'\r' | b'\n')) {
        let cut = target.split(|&b| b == b'?').next().unwrap_or(&[]);
        assert_eq!(
            path, cut,
            "origin-form path is the target before its first `?`"
        );
    }
}

/// Authorization parser: never panics; agrees with a simple reference; valid credentials
/// round-trip through `Bearer <token>`.
pub fn check_bearer_header(data: &[u8]) {
    let parsed = parse_bearer_value(data);
    assert_eq!(
        parsed,
        reference_bearer(data),
        "parser and reference disagree on {data:?}"
    );
    if let Ok(token) = parsed {
        assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES && is_token68(token));
        let mut again = b"Bearer ".to_vec();
        again.extend_from_slice(token);
        assert_eq!(parse_bearer_value(&again), Ok(token));
        assert_eq!(parse_bearer(&[data, data]), Err(AuthFailure::Malformed));
    }
}

/// The grammar written out the slow, obvious way over a `String`-free byte walk.
fn reference_bearer(data: &[u8]) -> Result<&[u8], AuthFailure> {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = data.iter().position(|b| !is_ows(b)).unwrap_or(data.len());
    let end = data
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    let v = &data[start..end.max(start)];
    if v.len() < 6 || !v[..6].eq_ignore_ascii_case(b"bearer") {
        return Err(AuthFailure::Missing);
    }
    match v.get(6) {
        None => return Err(AuthFailure::Malformed),
        Some(b' ') => {}
        Some(b'\t') => return Err(AuthFailure::Malformed),
        Some(_) => return Err(AuthFailure::Missing),
    }
    let mut i = 6;
    while v.get(i) == Some(&b' ') {
        i += 1;
    }
    let token = &v[i..];
    let mut seen_pad = false;
    let mut body = 0;
    for &b in token {
        let tchar = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
        if b == b'=' {
            seen_pad = true;
        } else if tchar && !seen_pad {
            body += 1;
        } else {
            return Err(AuthFailure::Malformed);
        }
    }
    if body == 0 || token.len() > MAX_TOKEN_BYTES {
        return Err(AuthFailure::Malformed);
    }
    Ok(token)
}

/// Token format: never panics on any bytes; a token built from any 40 random characters is
/// well-formed, and changing any one character of it breaks it. A pasted value (leak
/// response) is read as a token only if a well-formed token with that hash is in it, and a
/// token wrapped in paste noise is always read as itself.
pub fn check_token_format(data: &[u8]) {
    let _ = is_well_formed(data);
    let pasted = String::from_utf8_lossy(data);
    if let Some(hash) = read_pasted(&pasted) {
        assert!(
            pasted
                .as_bytes()
                .windows(TOKEN_LEN)
                .any(|w| is_well_formed(w) && TokenHash::of(w) == hash),
            "a pasted value was read as a token it does not hold"
        );
    }
    if data.len() < RANDOM_LEN {
        return;
    }
    let mut random = [0u8; RANDOM_LEN];
    random.copy_from_slice(&data[..RANDOM_LEN]);
    let token = PlaintextToken::from_random_bytes(&random);
    let bytes = token.expose_secret().as_bytes();
    assert_eq!(bytes.len(), TOKEN_LEN);
    assert!(is_well_formed(bytes));
    let secret = token.expose_secret();
    for noisy in [
        format!(" \"{secret}\",\n"),
        format!("Bearer {secret}"),
        format!("'{secret}'"),
    ] {
        assert_eq!(read_pasted(&noisy), Some(token.hash()), "{noisy:?}");
    }
    let position = usize::from(data.get(RANDOM_LEN).copied().unwrap_or(0)) % TOKEN_LEN;
    let replacement = data.get(RANDOM_LEN + 1).copied().unwrap_or(b'x');
    if replacement != bytes[position] {
        let mut flipped = bytes.to_vec();
        flipped[position] = replacement;
        assert!(
            !is_well_formed(&flipped),
            "one changed character still passed"
        );
    }
}

/// Admin JSON bodies (create token, login, password change): never panic, and whatever is
/// accepted obeys the field rules.
pub fn check_admin_json(data: &[u8]) {
    let ct = Some(&b"application/json"[..]);
    if let Ok(o) = parse_object(ct, data, &["name", "expiresAt"]) {
        if let Ok(name) = o.required_str("name").and_then(validate_name) {
            assert!(!name.is_empty() && name.chars().count() <= MAX_NAME_CHARS);
            assert!(!name.chars().any(char::is_control));
            assert_eq!(name.trim(), name);
        }
        if let Ok(Some(at)) = o
            .optional_str("expiresAt")
            .and_then(|e| parse_expires_at(e, 1_796_000_000))
        {
            assert!(at > 1_796_000_000);
        }
    }
    // Owners and descriptions (create and PATCH bodies): whatever is accepted is trimmed,
    // non-empty, within its length, without bidi or zero-width characters and without a
    // well-formed token; an owner is one line.
    if let Ok(o) = parse_object(ct, data, &["name", "owner", "description"]) {
        for (field, max, multiline) in [
            ("owner", MAX_OWNER_CHARS, false),
            ("description", MAX_DESCRIPTION_CHARS, true),
        ] {
            let Ok(Some(Some(raw))) = o.patch_str(field) else {
                continue;
            };
            let checked = if multiline {
                validate_description(raw)
            } else {
                validate_owner(raw)
            };
            if let Ok(Some(text)) = checked {
                assert!(!text.is_empty() && text.chars().count() <= max);
                assert_eq!(text.trim(), text);
                assert!(text
                    .chars()
                    .all(|c| !c.is_control() || (multiline && matches!(c, '\n' | '\r' | '\t'))));
                assert!(!text.contains('\u{202E}') && !text.contains('\u{200B}'));
                assert!(!text.as_bytes().windows(TOKEN_LEN).any(is_well_formed));
            }
        }
    }
    for fields in [
        &["username", "password"][..],
        &["currentPassword", "newPassword"][..],
    ] {
        if let Ok(o) = parse_object(ct, data, fields) {
            for f in fields {
                let _ = o.required_str(f);
            }
        }
    }
}

/// Forwarded facts and token restrictions (issue 19). The input is header lines
/// (`name: value`, split on `\n`); its first byte picks the peer (trusted or not) and the
/// request's own method. Properties an attacker cares about:
/// - from an untrusted peer nothing is believed: the client is the peer, the method unknown;
/// - the client is the peer or an address written verbatim (trimmed) in an
///   `X-Forwarded-For` entry or `X-Real-IP`: a header can never make up an address;
/// - a known method is a valid token that a proxy header or (Envoy) the own method gave;
/// - a read-only token passes only GET, HEAD and OPTIONS, never an unknown method;
/// - allowed-prefix lists: any accepted list re-parses from its canonical spelling to the
///   same prefixes, and a prefix's stored bytes decode to itself.
pub fn check_forwarded(data: &[u8]) {
    use crate::domain::restrictions::{validate_allowed_cidrs, Access, IpPrefix};
    use crate::http::forwarded::forwarded;
    use crate::http::TrustedProxies;
    use std::net::IpAddr;

    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let peer: IpAddr = if first & 1 == 0 {
        [127, 0, 0, 1].into()
    } else {
        [203, 0, 113, 9].into()
    };
    let own_method = ["GET", "POST", "DELETE", "get"][usize::from(first >> 1) % 4];
    let trusted = TrustedProxies::parse("127.0.0.0/8,::1,10.0.0.0/8").unwrap_or_default();
    let headers: Vec<(&[u8], &[u8])> = rest
        .split(|&b| b == b'\n')
        .take(100)
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let value = &line[colon + 1..];
            let start = value.iter().position(|&b| b != b' ').unwrap_or(value.len());
            Some((&line[..colon], &value[start..]))
        })
        .collect();
    let facts = forwarded(
        headers.iter().copied(),
        own_method,
        "/auth/verify/api/x",
        peer,
        &trusted,
    );
    if !trusted.contains(peer) {
        assert_eq!(facts.client, peer, "an untrusted peer chose the client");
        assert_eq!(facts.method, None, "an untrusted peer chose the method");
        assert_eq!(facts.uri, None);
    }
    if facts.client != peer {
        let written = headers.iter().any(|(n, v)| {
            (n.eq_ignore_ascii_case(b"x-forwarded-for") || n.eq_ignore_ascii_case(b"x-real-ip"))
                && v.split(|&b| b == b',').any(|entry| {
                    std::str::from_utf8(entry)
                        .ok()
                        .and_then(|e| e.trim_matches([' ', '\t']).parse::<IpAddr>().ok())
                        == Some(facts.client)
                })
        });
        assert!(written, "client {} appears in no header", facts.client);
    }
    if let Some(m) = facts.method {
        let from_header = headers.iter().any(|(n, v)| {
            (n.eq_ignore_ascii_case(b"x-original-method")
                || n.eq_ignore_ascii_case(b"x-forwarded-method"))
                && *v == m.as_bytes()
        });
        assert!(from_header || m == own_method, "method {m:?} from nowhere");
        assert!(!m.is_empty() && m.len() <= crate::http::forwarded::MAX_METHOD_BYTES);
    }
    let read_ok = Access::Read.allows(facts.method);
    assert_eq!(
        read_ok,
        matches!(facts.method, Some("GET" | "HEAD" | "OPTIONS")),
        "read-only let {:?} through",
        facts.method
    );

    let text = String::from_utf8_lossy(rest);
    let list: Vec<&str> = text.split([',', '\n']).take(120).collect();
    if let Ok(networks) = validate_allowed_cidrs(&list) {
        assert!(networks.prefixes().len() <= 100);
        let again = validate_allowed_cidrs(&networks.to_strings()).ok();
        assert_eq!(
            again.as_ref(),
            Some(&networks),
            "canonical spelling did not re-parse to the same prefixes"
        );
        for p in networks.prefixes() {
            assert_eq!(IpPrefix::from_bytes(&p.to_bytes()), Some(*p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The routing property over many random queries built from the pieces that confuse
    /// routers, for every route and a few lookalikes. Fails on the pre-issue-14 parser in
    /// the first few cases.
    #[test]
    fn issue_14_routing_ignores_any_query() {
        const PIECES: [&str; 16] = [
            "://",
            "http://h",
            "HTTPS://h",
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/admin/",
            "/auth/verify",
            "/..",
            "%2e",
            "%2f",
            ";",
            "//",
            "?",
            "&next=",
            "x",
        ];
        const PATHS: [&str; 12] = [
            "/auth/verify",
            "/auth/verify/x",
            "/api/token",
            "/api/x",
            "/admin/",
            "/admin/api/tokens",
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/",
            "/auth/verifyx",
            "/AUTH/verify",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        for _ in 0..20_000 {
            let path = PATHS[rng.gen_range(0..PATHS.len())];
            let mut query = String::new();
            for _ in 0..rng.gen_range(0..6) {
                query.push_str(PIECES[rng.gen_range(0..PIECES.len())]);
            }
            let mut data = path.as_bytes().to_vec();
            data.push(0xff);
            data.extend_from_slice(query.as_bytes());
            check_routing(&data);
        }
    }

    #[test]
    fn properties_hold_on_hand_picked_inputs() {
        check_request_head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        check_bearer_header(b"Bearer abc==");
        check_bearer_header(b"bearer\t x");
        check_bearer_header(b"  BEARER   a.b~c  ");
        check_token_format(&[7u8; 42]);
        check_admin_json(br#"{"name":" x ","expiresAt":"2030-01-01"}"#);
        check_admin_json(br#"{"owner":" team-a ","description":"line\nline\t"}"#);
        check_admin_json(br#"{"owner":null,"description":"evil\u202e"}"#);
        let secret = PlaintextToken::generate();
        check_admin_json(
            format!(r#"{{"description":"was {}"}}"#, secret.expose_secret()).as_bytes(),
        );
    }
}
