//! The admin web console ("System Configuration > API Tokens") served from the binary: one
//! HTML page, one script, one stylesheet, compiled in (air-gapped sites fetch nothing from
//! outside). Strict CSP with no inline script, no framing, no referrer. The page talks to the
//! admin API with the session cookie and CSRF token; names are rendered as text.

use crate::http::Response;
use crate::service::error::{Error, Result};

const INDEX_HTML: &str = include_str!("index.html");
const CONSOLE_JS: &str = include_str!("console.js");
const CONSOLE_CSS: &str = include_str!("console.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Serves `GET /admin`, `/admin/`, `/admin/console.js`, `/admin/console.css`.
pub fn serve_asset(method: &str, path: &str) -> Result<Response> {
    let (content_type, body) = match path {
        "/admin" => {
            return if method == "GET" {
                Ok(Response::new(308).header("Location", "/admin/"))
            } else {
                Err(Error::MethodNotAllowed("GET, HEAD"))
            };
        }
        "/admin/" | "/admin/index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        "/admin/console.js" => ("text/javascript; charset=utf-8", CONSOLE_JS),
        "/admin/console.css" => ("text/css; charset=utf-8", CONSOLE_CSS),
        _ => return Err(Error::NotFound),
    };
    if method != "GET" {
        return Err(Error::MethodNotAllowed("GET, HEAD"));
    }
    Ok(with_security_headers(
        Response::new(200)
            .header("Content-Type", content_type)
            .body(body.as_bytes()),
    ))
}

/// The headers every console page carries.
pub fn with_security_headers(response: Response) -> Response {
    response
        .header("Content-Security-Policy", CSP)
        .header("X-Frame-Options", "DENY")
        .header("Referrer-Policy", "no-referrer")
        .header("Cross-Origin-Opener-Policy", "same-origin")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_and_headers() {
        let r = serve_asset("GET", "/admin/").unwrap();
        assert_eq!(r.status(), 200);
        assert!(r
            .header_value("Content-Security-Policy")
            .unwrap()
            .contains("script-src 'self'"));
        assert_eq!(r.header_value("X-Frame-Options"), Some("DENY"));
        let html = String::from_utf8_lossy(r.body_bytes()).into_owned();
        assert!(!html.contains("<script>"), "no inline script");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external assets"
        );
        assert_eq!(serve_asset("GET", "/admin").unwrap().status(), 308);
        assert!(serve_asset("GET", "/admin/nope.js").is_err());
        assert!(serve_asset("POST", "/admin/").is_err());
    }
}
