//! A minimal W3C WebDriver client over the raw HTTP client, driving Debian's chromium through
//! chromedriver (no browser download, no npm). Missing programs: a loud skip locally, a
//! failure under `CI=true`.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{try_raw, Req, TempDir};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Finds an external program, or says loudly why a test cannot run (failing under CI).
pub fn require_program(path: &str, package: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    let message = format!(
        "\n!!! {path} is missing: install Debian package `{package}` to run this test. SKIPPED.\n"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message} (CI=true: a missing program is a failure)");
    }
    eprintln!("{message}");
    false
}

pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver + headless chromium, or `None` when they are not installed (local).
    pub fn start(width: u32, height: u32) -> Option<Browser> {
        if !require_program("/usr/bin/chromium", "chromium")
            || !require_program("/usr/bin/chromedriver", "chromium-driver")
        {
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while try_raw(addr, &Req::get("/status").to_bytes()).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = TempDir::new("chrome-profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ]
            }
        }}});
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().expect("session id").to_string();
        Some(b)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut req = Req::new(method, path);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let r = crate::support::raw(self.addr, &req.to_bytes());
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert!(
            r.status < 400,
            "webdriver {method} {path} → {}: {v}",
            r.status
        );
        v["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({"url": url})));
    }

    pub fn set_size(&self, width: u32, height: u32) {
        self.session_call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Makes the page's local time zone `tz` (an IANA name) through chromium's DevTools
    /// protocol, so a test can show that the console does not display UTC values in it.
    pub fn emulate_time_zone(&self, tz: &str) {
        self.session_call(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": "Emulation.setTimezoneOverride", "params": {"timezoneId": tz}})),
        );
    }

    /// Runs a script (`return ...;`) with arguments.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    pub fn wait_for(&self, what: &str, condition_js: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.exec(&format!("return !!({condition_js});"), json!([])) == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let html = self.exec("return document.body.innerText;", json!([]));
                panic!("timed out waiting for {what} ({condition_js}); page text: {html}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn visible(&self, id: &str) -> bool {
        self.exec(
            "const e = document.getElementById(arguments[0]); if (!e) return false; if (e.tagName === 'DIALOG') return e.open; return !e.hidden && e.getClientRects().length > 0;",
            json!([id]),
        ) == json!(true)
    }

    fn element(&self, css: &str) -> String {
        let v = self.session_call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string()
    }

    pub fn click(&self, css: &str) {
        let e = self.element(css);
        self.session_call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.session_call("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.session_call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        );
    }

    /// Sends keys to whatever has focus (keyboard-only navigation).
    pub fn keys(&self, text: &str) {
        let actions: Vec<Value> = text
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.session_call(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        );
    }

    pub fn text(&self, css: &str) -> String {
        let e = self.element(css);
        self.session_call("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn value_of(&self, id: &str) -> String {
        self.exec(
            "return document.getElementById(arguments[0]).value;",
            json!([id]),
        )
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// Saves a PNG screenshot under `target/browser-artifacts/` and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.session_call("GET", "/screenshot", None);
        let bytes = decode_base64(b64.as_str().unwrap_or(""));
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = crate::support::try_raw(
                self.addr,
                &Req::new("DELETE", &format!("/session/{}", self.session)).to_bytes(),
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    } as u32;
    let clean: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let mut n = 0u32;
        for &c in chunk {
            n = (n << 6) | if c == b'=' { 0 } else { val(c) };
        }
        n <<= 6 * (4 - chunk.len()) as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    out
}
