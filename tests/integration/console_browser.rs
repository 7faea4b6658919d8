//! Issue 4: the admin console in a real headless chromium (WebDriver): log in, create tokens
//! with and without expiry, the secret shown once works and is forgotten, last-used appears,
//! inline validation errors, an XSS name renders literally, sort/filter, delete, logout.
//! Screenshots land in `target/browser-artifacts/`.

use serde_json::json;

use crate::support::{Req, Service};
use crate::webdriver::Browser;

fn row_names(b: &Browser) -> Vec<String> {
    b.exec(
        "return [...document.querySelectorAll('#token-rows td.name')].map(td => td.textContent);",
        json!([]),
    )
    .as_array()
    .unwrap()
    .iter()
    .map(|v| v.as_str().unwrap().to_string())
    .collect()
}

fn create_in_dialog(b: &Browser, name: &str, expiry: Option<&str>) -> String {
    b.click("#create-button");
    b.wait_for(
        "create dialog",
        "document.getElementById('create-dialog').open",
    );
    b.type_into("#token-name", name);
    if let Some(date) = expiry {
        b.exec(
            "document.getElementById('token-expiry').value = arguments[0];",
            json!([date]),
        );
    }
    b.click("#create-submit");
    b.wait_for("secret", "!document.getElementById('secret-view').hidden");
    let text = b.text("#secret-view .warning");
    assert!(
        text.contains("Copy it now — you will not be able to see it again"),
        "{text}"
    );
    b.value_of("secret-value")
}

#[test]
fn console_flows_in_a_real_browser() {
    let Some(b) = Browser::start(1280, 900) else {
        return;
    };
    let svc = Service::start(&[]);
    let base = format!("http://{}", svc.addr);

    // Security headers on the page itself.
    let page = Req::get("/admin/").send(svc.addr);
    assert_eq!(page.status, 200);
    let csp = page.header("Content-Security-Policy").unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert_eq!(page.header("X-Frame-Options"), Some("DENY"));
    assert_eq!(page.header("Referrer-Policy"), Some("no-referrer"));

    // Log in.
    b.goto(&format!("{base}/admin/"));
    b.wait_for(
        "login form",
        "!document.getElementById('login-view').hidden",
    );
    let unlabeled = b.exec(
        "return [...document.querySelectorAll('input')].filter(i => !document.querySelector(`label[for=\"${i.id}\"]`)).length;",
        json!([]),
    );
    assert_eq!(unlabeled, json!(0), "every input has a label");
    b.type_into("#login-username", "admin");
    b.type_into("#login-password", "wrong password");
    b.click("#login-submit");
    b.wait_for(
        "login error",
        "document.getElementById('login-error').textContent.length > 0",
    );
    b.type_into("#login-password", &svc.initial_password());
    b.click("#login-submit");
    b.wait_for("token list", "!document.getElementById('app-view').hidden");
    assert!(b.visible("initial-banner"), "initial password banner");

    // Create without expiry; the secret works against /api/token; closing forgets it.
    let secret = create_in_dialog(&b, "ci-no-expiry", None);
    assert_eq!(secret.len(), 49);
    b.screenshot("create-dialog");
    let me = Req::get("/api/token").bearer(&secret).send(svc.addr);
    assert_eq!(me.status, 200);
    b.click("#secret-done");
    b.wait_for(
        "dialog closed",
        "!document.getElementById('create-dialog').open",
    );
    // Done forgets the secret before it closes the dialog: no waiting needed.
    assert_eq!(
        b.value_of("secret-value"),
        "",
        "secret forgotten after closing"
    );
    assert!(!b
        .exec("return document.body.innerHTML;", json!([]))
        .as_str()
        .unwrap()
        .contains(&secret));

    // Create with an expiry date.
    let secret2 = create_in_dialog(&b, "ci-expiry", Some("2999-12-31"));
    assert_eq!(
        Req::get("/api/token")
            .bearer(&secret2)
            .send(svc.addr)
            .status,
        200
    );
    b.keys("\u{E00C}"); // Escape closes the dialog from the keyboard.
                        // The close event is dispatched after `open` turns false: wait for both.
    b.wait_for(
        "dialog closed and secret forgotten",
        "!document.getElementById('create-dialog').open && document.getElementById('secret-value').value === ''",
    );

    // Last used appears after a reload.
    b.goto(&format!("{base}/admin/"));
    b.wait_for(
        "rows",
        "document.querySelectorAll('#token-rows tr').length === 2",
    );
    let last_used = b.exec(
        "return [...document.querySelectorAll('#token-rows tr')].map(tr => [tr.querySelector('td.name').textContent, tr.querySelector('td.last-used').textContent, tr.querySelector('td.last-used').title]);",
        json!([]),
    );
    for row in last_used.as_array().unwrap() {
        assert_ne!(row[1], "Never", "{row}");
        assert!(
            row[2].as_str().unwrap().ends_with("UTC"),
            "UTC on hover: {row}"
        );
    }
    let expiry_cells = b.exec(
        "return [...document.querySelectorAll('#token-rows tr')].map(tr => tr.children[2].textContent);",
        json!([]),
    );
    assert!(expiry_cells
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "Never"));

    // Validation errors appear next to their fields.
    b.click("#create-button");
    b.wait_for(
        "create dialog",
        "document.getElementById('create-dialog').open",
    );
    b.exec(
        "document.getElementById('token-name').value = 'bad\\u202Ename';",
        json!([]),
    );
    b.click("#create-submit");
    b.wait_for(
        "name error",
        "document.getElementById('token-name-error').textContent.length > 0",
    );
    b.type_into("#token-name", "fine-name");
    b.exec(
        "document.getElementById('token-expiry').value = '2001-01-01';",
        json!([]),
    );
    b.click("#create-submit");
    b.wait_for(
        "expiry error",
        "document.getElementById('token-expiry-error').textContent.includes('future')",
    );
    b.type_into("#token-name", "ci-no-expiry");
    b.exec(
        "document.getElementById('token-expiry').value = '';",
        json!([]),
    );
    b.click("#create-submit");
    b.wait_for(
        "conflict",
        "document.getElementById('create-error').textContent.includes('already exists')",
    );
    b.click("#create-cancel");

    // A hostile name renders literally.
    let xss = "<img src=x onerror=alert(1)>";
    create_in_dialog(&b, xss, None);
    b.click("#secret-done");
    b.wait_for(
        "xss row",
        "document.querySelectorAll('#token-rows tr').length === 3",
    );
    assert!(row_names(&b).contains(&xss.to_string()));
    assert_eq!(
        b.exec(
            "return document.querySelectorAll('#token-rows img').length;",
            json!([])
        ),
        json!(0)
    );
    // ... and on its own page, title included.
    b.exec(
        "[...document.querySelectorAll('#token-rows td.name a')].find(a => a.textContent === arguments[0]).click();",
        json!([xss]),
    );
    b.wait_for(
        "the hostile token's page",
        "!document.getElementById('detail-body').hidden",
    );
    assert_eq!(b.text("#detail-title"), xss);
    assert_eq!(
        b.exec("return [document.querySelectorAll('img').length, document.title.startsWith(arguments[0])];", json!([xss])),
        json!([0, true])
    );
    b.exec("history.back();", json!([]));
    b.wait_for(
        "the list again",
        "!document.getElementById('tokens-panel').hidden && document.querySelectorAll('#token-rows tr').length === 3",
    );

    // Sort and filter.
    b.click("button.sort[data-sort='name']");
    let names = row_names(&b);
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| n.to_lowercase());
    assert_eq!(names, sorted);
    b.type_into("#filter", "expiry");
    b.wait_for(
        "filtered",
        "document.querySelectorAll('#token-rows tr').length === 2",
    );
    b.screenshot("token-list-filtered-1280");
    b.type_into("#filter", "");
    b.exec("const f = document.getElementById('filter'); f.value=''; f.dispatchEvent(new Event('input'));", json!([]));
    b.wait_for(
        "all rows",
        "document.querySelectorAll('#token-rows tr').length === 3",
    );
    b.screenshot("token-list-1280");
    b.set_size(390, 844);
    b.screenshot("token-list-390");
    let overflow = b.exec(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
        json!([]),
    );
    assert_eq!(overflow, json!(true), "no horizontal scrolling at 390 px");
    b.set_size(1280, 900);

    // Delete with confirmation naming the token; the secret stops working.
    b.click("button[aria-label='Delete token ci-no-expiry']");
    b.wait_for("confirm", "document.getElementById('delete-dialog').open");
    assert_eq!(b.text("#delete-name"), "ci-no-expiry");
    b.click("#delete-confirm");
    b.wait_for(
        "row gone",
        "document.querySelectorAll('#token-rows tr').length === 2",
    );
    assert_eq!(
        Req::get("/api/token").bearer(&secret).send(svc.addr).status,
        401
    );

    // Audit view.
    b.click("#tab-audit");
    b.wait_for(
        "audit rows",
        "document.querySelectorAll('#audit-rows tr').length > 0",
    );
    let audit_text = b.text("#audit-panel");
    assert!(audit_text.contains("token.deleted") && audit_text.contains("token.created"));
    b.click("#tab-tokens");

    // Log out: the session is gone for the browser too.
    b.click("#logout-button");
    b.wait_for(
        "login form",
        "!document.getElementById('login-view').hidden",
    );
    b.goto(&format!("{base}/admin/"));
    b.wait_for(
        "login form after reload",
        "!document.getElementById('login-view').hidden",
    );
}

#[test]
fn change_password_from_the_console_clears_the_banner() {
    let Some(b) = Browser::start(1280, 900) else {
        return;
    };
    let svc = Service::start(&[]);
    b.goto(&format!("http://{}/admin/", svc.addr));
    b.wait_for(
        "login form",
        "!document.getElementById('login-view').hidden",
    );
    b.type_into("#login-username", "admin");
    b.type_into("#login-password", &svc.initial_password());
    b.click("#login-submit");
    b.wait_for(
        "banner",
        "!document.getElementById('initial-banner').hidden",
    );
    b.click("#banner-change-password");
    b.wait_for("dialog", "document.getElementById('password-dialog').open");
    b.type_into("#current-password", &svc.initial_password());
    b.type_into("#new-password", "short");
    b.click("#password-submit");
    b.wait_for(
        "inline error",
        "document.getElementById('new-password-error').textContent.length > 0",
    );
    b.type_into("#new-password", "a long console passphrase");
    b.click("#password-submit");
    b.wait_for("closed", "!document.getElementById('password-dialog').open");
    assert!(!b.visible("initial-banner"));
    assert!(!svc.data_dir.join("initial-admin-password").exists());
}

/// Issue 18: the token list shows each token's owner and filters by it; the create dialog
/// takes an owner and a description (and shows their field errors inline); a token outside
/// the lifetime policy carries a badge.
#[test]
fn console_shows_owners_filters_by_them_and_flags_policy() {
    let Some(b) = Browser::start(1280, 900) else {
        return;
    };
    let temp = crate::support::TempDir::new("console-owner");
    let data = temp.path().join("data");
    let password = {
        let svc = Service::start_in(&data, &[]);
        let admin = crate::support::basic_auth("admin", &svc.initial_password());
        let r = Req::new("POST", "/admin/api/tokens")
            .header("Authorization", &admin)
            .json(&json!({"name": "legacy", "owner": "Team-Ops"}))
            .send(svc.addr);
        assert_eq!(r.status, 201);
        svc.initial_password()
    };
    let svc = Service::start_in(&data, &["--require-expiry"]);
    b.goto(&format!("http://{}/admin/", svc.addr));
    b.wait_for(
        "login form",
        "!document.getElementById('login-view').hidden",
    );
    b.type_into("#login-username", "admin");
    b.type_into("#login-password", &password);
    b.click("#login-submit");
    b.wait_for("token list", "!document.getElementById('app-view').hidden");
    b.wait_for(
        "the legacy token",
        "document.querySelectorAll('#token-rows tr').length === 1",
    );
    assert_eq!(b.text("#token-rows td.owner"), "Team-Ops");
    assert_eq!(b.text("#token-rows .badge.policy"), "No expiry (policy)");

    // Create with owner and description; the policy's refusal shows on the expiry field.
    b.click("#create-button");
    b.wait_for("dialog", "document.getElementById('create-dialog').open");
    b.type_into("#token-name", "exports");
    b.type_into("#token-owner", "team-data");
    b.type_into("#token-description", "nightly exports");
    b.click("#create-submit");
    b.wait_for(
        "the policy's inline error",
        "document.getElementById('token-expiry-error').textContent.includes('expiry is required')",
    );
    b.exec(
        "document.getElementById('token-expiry').value = arguments[0];",
        json!(["2999-12-31"]),
    );
    b.exec(
        "document.getElementById('token-owner').value = 'x'.repeat(200) + '\\u202e';",
        json!([]),
    );
    b.click("#create-submit");
    b.wait_for(
        "the owner's inline error",
        "document.getElementById('token-owner-error').textContent.length > 0",
    );
    b.exec(
        "document.getElementById('token-owner').value = 'team-data';",
        json!([]),
    );
    b.click("#create-submit");
    b.wait_for("secret", "!document.getElementById('secret-view').hidden");
    b.click("#secret-done");
    b.wait_for(
        "two rows",
        "document.querySelectorAll('#token-rows tr').length === 2",
    );
    let owners = b.exec(
        "return [...document.querySelectorAll('#token-rows td.owner')].map(td => td.textContent).sort();",
        json!([]),
    );
    assert_eq!(owners, json!(["Team-Ops", "team-data"]));

    // The owner filter box.
    b.type_into("#owner-filter", "TEAM-D");
    b.wait_for(
        "filtered by owner",
        "document.querySelectorAll('#token-rows tr').length === 1",
    );
    assert_eq!(row_names(&b), ["exports"]);
    b.screenshot("token-list-owner-filter-1280");
    let me = Req::get("/admin/api/tokens?owner=team-data")
        .header(
            "Authorization",
            &crate::support::basic_auth("admin", &password),
        )
        .send(svc.addr)
        .json();
    assert_eq!(me["items"][0]["description"], "nightly exports");
}

/// Issue 18 part 1: a Rotate button with the overlap choice; the new secret is shown once,
/// the old one keeps working as chosen, and the row says an old secret is still active.
#[test]
fn console_rotates_a_token_with_an_overlap() {
    let Some(b) = Browser::start(1280, 900) else {
        return;
    };
    let svc = Service::start(&[]);
    let admin = crate::support::admin_basic(&svc);
    let r = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", &admin)
        .json(&json!({"name": "deploy"}))
        .send(svc.addr);
    assert_eq!(r.status, 201);
    let old = r.json()["token"].as_str().unwrap().to_owned();
    b.goto(&format!("http://{}/admin/", svc.addr));
    b.wait_for(
        "login form",
        "!document.getElementById('login-view').hidden",
    );
    b.type_into("#login-username", "admin");
    b.type_into("#login-password", &svc.initial_password());
    b.click("#login-submit");
    b.wait_for(
        "the token",
        "document.querySelectorAll('#token-rows tr').length === 1",
    );
    b.click("#token-rows button.rotate");
    b.wait_for(
        "rotate dialog",
        "document.getElementById('rotate-dialog').open",
    );
    assert_eq!(b.text("#rotate-name"), "deploy");
    b.exec(
        "document.getElementById('rotate-overlap').value = 'untilNewSecretUsed';",
        json!([]),
    );
    b.click("#rotate-submit");
    b.wait_for(
        "the new secret",
        "!document.getElementById('rotate-secret-view').hidden",
    );
    let new = b.value_of("rotate-secret-value");
    assert!(new.starts_with("pa_") && new != old, "{new}");
    b.screenshot("token-rotate-secret-1280");
    b.click("#rotate-done");
    b.wait_for(
        "the secret forgotten",
        "document.getElementById('rotate-secret-value').value === ''",
    );
    b.wait_for(
        "the old-secret badge",
        "document.querySelector('#token-rows .badge.previous') !== null",
    );
    let rotation = b.text("#token-rows td.rotation");
    assert!(
        rotation.starts_with("Rotating — old secret works until ")
            && rotation.ends_with("UTC; not used since the new secret"),
        "{rotation}"
    );
    let verify = |secret: &str| {
        let r = Req::get("/auth/verify").bearer(secret).send(svc.addr);
        (r.status, r.header("X-PA-Token-Secret").map(str::to_owned))
    };
    assert_eq!(verify(&old), (200, Some("previous".into())));
    assert_eq!(verify(&new), (200, Some("current".into())));
    assert_eq!(verify(&old).0, 401, "ended by the new secret's first use");
}

fn sign_in(b: &Browser, svc: &Service) {
    b.goto(&format!("http://{}/admin/", svc.addr));
    b.wait_for(
        "login form",
        "!document.getElementById('login-view').hidden",
    );
    b.type_into("#login-username", "admin");
    b.type_into("#login-password", &svc.initial_password());
    b.click("#login-submit");
    b.wait_for("token list", "!document.getElementById('app-view').hidden");
}

/// The UTC calendar date `days` from today, as the create dialog sends it.
fn utc_date_in(days: i64) -> String {
    (time::OffsetDateTime::now_utc().date() + time::Duration::days(days)).to_string()
}

fn api_token(svc: &Service, admin: &str, id: &str) -> serde_json::Value {
    let r = Req::get(&format!("/admin/api/tokens/{id}"))
        .header("Authorization", admin)
        .send(svc.addr);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Issue 18 part 5: the list shows the expiry as the last day the token works, the date the
/// admin chose, in UTC whatever the browser's time zone (here UTC+14, where the stored
/// instant 3000-01-01T00:00:00Z is already the afternoon of Jan 1), and a badge for tokens
/// whose last day is at most 7 days away.
#[test]
fn console_shows_expiry_as_the_chosen_utc_day_and_a_seven_day_badge() {
    let Some(b) = Browser::start(1280, 900) else {
        return;
    };
    let svc = Service::start(&[]);
    let admin = crate::support::admin_basic(&svc);
    for (name, date) in [("soon", utc_date_in(3)), ("later", utc_date_in(30))] {
        let r = Req::new("POST", "/admin/api/tokens")
            .header("Authorization", &admin)
            .json(&json!({"name": name, "expiresAt": date}))
            .send(svc.addr);
        assert_eq!(r.status, 201, "{}", r.text());
    }
    b.emulate_time_zone("Pacific/Kiritimati");
    sign_in(&b, &svc);
    assert_eq!(
        b.exec(
            "return Intl.DateTimeFormat().resolvedOptions().timeZone;",
            json!([])
        ),
        json!("Pacific/Kiritimati")
    );
    create_in_dialog(&b, "far", Some("2999-12-31"));
    b.click("#secret-done");
    b.wait_for(
        "three rows",
        "document.querySelectorAll('#token-rows tr').length === 3",
    );
    let cells = b.exec(
        "return Object.fromEntries([...document.querySelectorAll('#token-rows tr')].map(tr => \
         [tr.querySelector('td.name').textContent, [tr.querySelector('td.expires .expiry').textContent, \
         [...tr.querySelectorAll('td.expires .badge')].map(s => s.textContent)]]));",
        json!([]),
    );
    assert_eq!(
        cells["far"],
        json!(["Dec 31, 2999 (end of day UTC)", []]),
        "{cells}"
    );
    assert_eq!(cells["soon"][1], json!(["Expires in 3 days"]), "{cells}");
    assert_eq!(cells["later"][1], json!([]), "{cells}");
    assert!(
        cells["later"][0]
            .as_str()
            .unwrap()
            .ends_with("(end of day UTC)"),
        "{cells}"
    );
    // The API's value is unchanged: the first second the token no longer works.
    let list = Req::get("/admin/api/tokens")
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    let far = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "far")
        .unwrap();
    assert_eq!(far["expiresAt"], "3000-01-01T00:00:00Z");
    b.screenshot("token-list-expiry-1280");

    // The token's page shows the expiry the same way.
    b.click("#token-rows a[href*='/tokens/']");
    b.wait_for(
        "a token page",
        "!document.getElementById('detail-body').hidden",
    );
    let title = b.text("#detail-title");
    let expected = cells[&title][0].as_str().unwrap();
    assert_eq!(b.text("#detail-expires .expiry"), expected);
}

/// Issue 18 parts 1 and 5: a token's page (reached from its name, with a hash route that
/// survives a reload) shows its fields, its rotation state with the old secret's last use
/// (the stragglers), its own audit trail only, and ends the old secret early on request.
#[test]
fn console_token_page_shows_rotation_audit_and_ends_the_old_secret() {
    let Some(b) = Browser::start(1280, 900) else {
        return;
    };
    // No flush during the test: it would add a token.new_address to the counted audit rows.
    let svc = Service::start(&["--flush-interval", "3600"]);
    let admin = crate::support::admin_basic(&svc);
    let mut ids = Vec::new();
    for body in [
        json!({"name": "deploy", "owner": "team-ops", "description": "CI deploys"}),
        json!({"name": "other"}),
    ] {
        let r = Req::new("POST", "/admin/api/tokens")
            .header("Authorization", &admin)
            .json(&body)
            .send(svc.addr);
        assert_eq!(r.status, 201);
        ids.push((
            r.json()["id"].as_str().unwrap().to_owned(),
            r.json()["token"].as_str().unwrap().to_owned(),
        ));
    }
    let (id, old) = ids[0].clone();
    let other_id = ids[1].0.clone();
    // Another token's event that must not show on this token's page.
    let r = Req::new("PATCH", &format!("/admin/api/tokens/{other_id}"))
        .header("Authorization", &admin)
        .json(&json!({"owner": "someone"}))
        .send(svc.addr);
    assert_eq!(r.status, 200);

    sign_in(&b, &svc);
    b.wait_for(
        "two rows",
        "document.querySelectorAll('#token-rows tr').length === 2",
    );
    b.click(&format!("#token-rows tr[data-id='{id}'] td.name a"));
    b.wait_for(
        "the token page",
        "!document.getElementById('detail-body').hidden",
    );
    assert_eq!(
        b.exec("return location.hash;", json!([])),
        json!(format!("#/tokens/{id}"))
    );
    assert_eq!(b.text("#detail-title"), "deploy");
    assert_eq!(b.text("#detail-id"), id);
    assert_eq!(b.text("#detail-owner"), "team-ops");
    assert_eq!(b.text("#detail-description"), "CI deploys");
    assert_eq!(b.text("#detail-expires"), "Never");
    assert!(!b.visible("detail-end-previous"), "nothing to end yet");
    // A card with a display rule of its own stays hidden too (it showed, empty, once).
    assert_eq!(
        b.exec(
            "return document.getElementById('detail-previous').getClientRects().length;",
            json!([])
        ),
        json!(0),
        "no old secret to describe, and nothing drawn for it"
    );

    // Rotate from the page, 24 hours of overlap (the default).
    b.click("#detail-rotate");
    b.wait_for(
        "rotate dialog",
        "document.getElementById('rotate-dialog').open",
    );
    assert_eq!(b.text("#rotate-name"), "deploy");
    b.click("#rotate-submit");
    b.wait_for(
        "the new secret",
        "!document.getElementById('rotate-secret-view').hidden",
    );
    let new = b.value_of("rotate-secret-value");
    b.click("#rotate-done");
    b.wait_for(
        "the rotation state",
        "document.getElementById('detail-rotation-state').textContent.startsWith('Rotating')",
    );
    assert_ne!(new, old);
    assert!(b.visible("detail-end-previous"));
    assert_eq!(
        b.text("#detail-previous-used"),
        "Not used since the rotation"
    );

    // A straggler still uses the old secret: its last use shows after a reload (which keeps
    // the page: the route is in the hash).
    let r = Req::get("/auth/verify").bearer(&old).send(svc.addr);
    assert_eq!(
        (r.status, r.header("X-PA-Token-Secret")),
        (200, Some("previous"))
    );
    b.exec("window.beforeReload = true; location.reload();", json!([]));
    b.wait_for(
        "the token page after a reload",
        "!window.beforeReload && !document.getElementById('detail-body').hidden && document.getElementById('detail-title').textContent === 'deploy'",
    );
    let used = b.text("#detail-previous-used");
    assert!(
        !used.is_empty() && used != "Not used since the rotation",
        "{used}"
    );
    assert!(b.text("#detail-rotation-state").starts_with("Rotating — "));
    let until = b.text("#detail-previous-until");
    assert!(until.ends_with(" UTC"), "{until}");

    // Its audit trail: created and rotated, newest first; not the other token's update.
    b.wait_for(
        "audit rows",
        "document.querySelectorAll('#detail-audit-rows tr').length === 2",
    );
    let events = b.exec(
        "return [...document.querySelectorAll('#detail-audit-rows td.event')].map(td => td.textContent);",
        json!([]),
    );
    let events: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(events[0].starts_with("token.rotated"), "{events:?}");
    assert_eq!(events[1], "token.created", "{events:?}");
    b.screenshot("token-detail-1280");
    b.exec(
        "document.getElementById('detail-audit-rows').scrollIntoView();",
        json!([]),
    );
    b.screenshot("token-detail-audit-1280");
    b.exec("window.scrollTo(0, 0);", json!([]));
    b.set_size(390, 844);
    b.screenshot("token-detail-390");
    b.exec(
        "document.getElementById('detail-rotation-state').scrollIntoView();",
        json!([]),
    );
    b.screenshot("token-detail-rotation-390");
    assert_eq!(
        b.exec(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            json!([])
        ),
        json!(true),
        "no horizontal scrolling at 390 px"
    );
    b.set_size(1280, 900);

    // Back to the list: the row says the token is rotating, the other row does not.
    b.exec("history.back();", json!([]));
    b.wait_for(
        "the list",
        "!document.getElementById('tokens-panel').hidden && document.querySelectorAll('#token-rows tr').length === 2",
    );
    let rotation = b.text(&format!("#token-rows tr[data-id='{id}'] td.rotation"));
    assert!(
        rotation.starts_with("Rotating — old secret works until ")
            && rotation.contains("UTC; last used"),
        "{rotation}"
    );
    assert_eq!(
        b.text(&format!("#token-rows tr[data-id='{other_id}'] td.rotation")),
        ""
    );
    b.screenshot("token-list-rotating-1280");
    b.set_size(390, 844);
    b.exec(
        "document.querySelector('#token-rows td.rotation:not(:empty)').scrollIntoView();",
        json!([]),
    );
    b.screenshot("token-list-rotating-390");
    assert_eq!(
        b.exec(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            json!([])
        ),
        json!(true),
        "no horizontal scrolling at 390 px"
    );
    b.set_size(1280, 900);

    // End the old secret now, after a confirmation.
    b.click(&format!("#token-rows tr[data-id='{id}'] td.name a"));
    b.wait_for(
        "the end button",
        "!document.getElementById('detail-body').hidden && !document.getElementById('detail-end-previous').hidden",
    );
    b.click("#detail-end-previous");
    b.wait_for(
        "confirmation",
        "document.getElementById('end-previous-dialog').open",
    );
    assert_eq!(b.text("#end-previous-name"), "deploy");
    b.click("#end-previous-confirm");
    b.wait_for(
        "the old secret ended",
        "!document.getElementById('end-previous-dialog').open && document.getElementById('detail-end-previous').hidden",
    );
    assert_eq!(
        b.text("#detail-rotation-state"),
        "Not rotating: only the current secret works."
    );
    assert_eq!(
        api_token(&svc, &admin, &id)["previousSecret"],
        serde_json::Value::Null
    );
    assert_eq!(
        Req::get("/auth/verify").bearer(&old).send(svc.addr).status,
        401
    );
    assert_eq!(
        Req::get("/auth/verify").bearer(&new).send(svc.addr).status,
        200
    );
    b.wait_for(
        "the end in the audit trail",
        "[...document.querySelectorAll('#detail-audit-rows td.event')].some(td => td.textContent.startsWith('token.previous_secret_expired'))",
    );

    // Delete from the page: back to the list, without the token.
    b.click("#detail-delete");
    b.wait_for("confirm", "document.getElementById('delete-dialog').open");
    b.click("#delete-confirm");
    b.wait_for(
        "the list without it",
        "location.hash === '#/tokens' && !document.getElementById('tokens-panel').hidden && document.querySelectorAll('#token-rows tr').length === 1",
    );
    assert_eq!(row_names(&b), ["other"]);

    // A long trail comes 50 events at a time, with the API's cursor.
    for i in 0..50 {
        let r = Req::new("PATCH", &format!("/admin/api/tokens/{other_id}"))
            .header("Authorization", &admin)
            .json(&json!({"description": format!("edit {i}")}))
            .send(svc.addr);
        assert_eq!(r.status, 200);
    }
    b.click(&format!("#token-rows tr[data-id='{other_id}'] td.name a"));
    b.wait_for(
        "the first page of its trail",
        "document.getElementById('detail-title').textContent === 'other' && document.querySelectorAll('#detail-audit-rows tr').length === 50",
    );
    assert!(b.visible("detail-audit-more"));
    b.click("#detail-audit-more");
    b.wait_for(
        "the rest of its trail",
        "document.querySelectorAll('#detail-audit-rows tr').length === 52",
    );
    assert!(!b.visible("detail-audit-more"));
    assert_eq!(
        b.exec(
            "return [...document.querySelectorAll('#detail-audit-rows td.event')].map(td => td.textContent).slice(-2);",
            json!([])
        ),
        json!(["token.updated (owner)", "token.created"])
    );
}

/// Issue 19 parts 5 and 6 in the console: "Revoke leaked tokens" takes pasted values (noise
/// around them, garbage, an XSS-shaped name shown as text), deletes the known ones and forgets
/// what was pasted; "Bulk delete" previews the selection and deletes exactly the previewed
/// count, or nothing when the selection changed meanwhile. At 1280 and 390 px.
#[test]
fn console_revokes_leaked_tokens_and_bulk_deletes_after_a_preview() {
    let Some(b) = Browser::start(1280, 900) else {
        return;
    };
    let svc = Service::start(&[]);
    let admin = crate::support::admin_basic(&svc);
    let create = |name: &str| {
        let r = Req::new("POST", "/admin/api/tokens")
            .header("Authorization", &admin)
            .json(&json!({"name": name}))
            .send(svc.addr);
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["token"].as_str().unwrap().to_owned()
    };
    let leaked = create("leaked-in-chat");
    let xss = create("<img src=x onerror=window.pwned=1>");
    create("ci-a");
    create("ci-b");
    create("keep");
    sign_in(&b, &svc);
    b.wait_for(
        "five rows",
        "document.querySelectorAll('#token-rows tr').length === 5",
    );

    b.click("#revoke-button");
    b.wait_for(
        "revoke dialog",
        "document.getElementById('revoke-dialog').open",
    );
    b.exec(
        "document.getElementById('revoke-values').value = arguments[0];",
        json!([format!("  \"{leaked}\",\nBearer {xss}\n\nnot-a-token\n")]),
    );
    b.set_size(390, 844);
    b.screenshot("revoke-dialog-390");
    b.set_size(1280, 900);
    b.click("#revoke-submit");
    b.wait_for(
        "the result",
        "!document.getElementById('revoke-result').hidden",
    );
    assert_eq!(
        b.text("#revoke-summary"),
        "2 tokens revoked, 1 value not a pa-auth token."
    );
    let listed = b.text("#revoke-list");
    assert!(
        listed.contains("leaked-in-chat") && listed.contains("<img src=x onerror=window.pwned=1>"),
        "{listed}"
    );
    assert_eq!(
        b.value_of("revoke-values"),
        "",
        "the pasted values are forgotten"
    );
    assert_eq!(
        b.exec("return window.pwned === undefined;", json!([])),
        json!(true)
    );
    b.screenshot("revoke-dialog-result-1280");
    b.click("#revoke-done");
    b.wait_for(
        "three rows",
        "document.querySelectorAll('#token-rows tr').length === 3",
    );
    for secret in [&leaked, &xss] {
        assert_eq!(
            Req::get("/api/token").bearer(secret).send(svc.addr).status,
            401
        );
    }

    b.click("#bulk-button");
    b.wait_for("bulk dialog", "document.getElementById('bulk-dialog').open");
    b.type_into("#bulk-prefix", "CI-");
    b.click("#bulk-dry-run");
    b.wait_for(
        "the preview",
        "!document.getElementById('bulk-preview').hidden",
    );
    assert_eq!(b.text("#bulk-count"), "2 tokens selected:");
    let sample = b.text("#bulk-sample");
    assert!(sample.contains("ci-a") && sample.contains("ci-b") && !sample.contains("keep"));
    assert_eq!(b.text("#bulk-confirm"), "Delete 2 tokens");
    b.screenshot("bulk-delete-preview-1280");
    b.set_size(390, 844);
    b.screenshot("bulk-delete-preview-390");
    let fits = b.exec(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1 && \
         document.getElementById('bulk-dialog').scrollWidth <= document.getElementById('bulk-dialog').clientWidth + 1;",
        json!([]),
    );
    assert_eq!(fits, json!(true), "no horizontal scrolling at 390 px");
    b.set_size(1280, 900);
    // Changing the filter withdraws the preview: only a previewed count can be deleted.
    b.type_into("#bulk-prefix", "ci");
    assert_eq!(
        b.exec(
            "return document.getElementById('bulk-confirm').disabled;",
            json!([])
        ),
        json!(true)
    );
    b.click("#bulk-dry-run");
    b.wait_for(
        "the preview",
        "!document.getElementById('bulk-preview').hidden",
    );
    b.click("#bulk-confirm");
    b.wait_for(
        "dialog closed",
        "!document.getElementById('bulk-dialog').open",
    );
    b.wait_for(
        "one row",
        "document.querySelectorAll('#token-rows tr').length === 1",
    );
    assert_eq!(row_names(&b), ["keep"]);

    // A selection that changed since the preview deletes nothing.
    b.click("#bulk-button");
    b.wait_for("bulk dialog", "document.getElementById('bulk-dialog').open");
    b.click("#bulk-all");
    b.click("#bulk-dry-run");
    b.wait_for(
        "the preview",
        "!document.getElementById('bulk-preview').hidden",
    );
    assert_eq!(b.text("#bulk-count"), "1 token selected:");
    create("made-meanwhile");
    b.click("#bulk-confirm");
    b.wait_for(
        "the refusal",
        "document.getElementById('bulk-error').textContent !== ''",
    );
    let error = b.text("#bulk-error");
    assert!(
        error.contains("now selects 2 tokens") && error.ends_with("Nothing was deleted."),
        "{error}"
    );
    b.screenshot("bulk-delete-stale-1280");
    let r = Req::get("/admin/api/tokens")
        .header("Authorization", &admin)
        .send(svc.addr);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 2);
}

/// Issue 19 part 3: the token page draws the last 90 days as a bar chart (an inline SVG, one
/// titled bar per day, the whole labelled) and lists the client addresses, at 1280 and
/// 390 px, under the console's CSP (no violation reported).
#[test]
fn console_token_page_draws_usage_and_lists_addresses() {
    let Some(b) = Browser::start(1280, 900) else {
        return;
    };
    let svc = Service::start(&["--flush-interval", "1"]);
    let admin = crate::support::admin_basic(&svc);
    let r = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", &admin)
        .json(&json!({"name": "busy"}))
        .send(svc.addr);
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let verify = format!(
        "GET /auth/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    for (source, times) in [("127.0.0.2", 3), ("127.0.0.3", 1)] {
        for _ in 0..times {
            let r = crate::support::from_address(source, svc.addr, verify.as_bytes());
            assert_eq!(r.status, 200);
        }
    }

    sign_in(&b, &svc);
    b.exec(
        "window.__cspViolations = []; document.addEventListener('securitypolicyviolation', \
         (e) => window.__cspViolations.push(e.violatedDirective));",
        json!([]),
    );
    b.exec(&format!("location.hash = '#/tokens/{id}';"), json!([]));
    b.wait_for(
        "the usage chart",
        "document.querySelectorAll('#usage-chart svg rect.bar').length === 90",
    );
    let chart = b.exec(
        "const svg = document.querySelector('#usage-chart svg'); \
         const bars = [...svg.querySelectorAll('rect.bar')]; \
         const last = bars[bars.length - 1]; \
         return { role: svg.getAttribute('role'), label: svg.getAttribute('aria-label'), \
           titled: bars.filter((r) => r.querySelector('title')).length, \
           lastTitle: last.querySelector('title').textContent, \
           lastCount: last.dataset.count, zero: bars.filter((r) => r.classList.contains('zero')).length, \
           tallest: Math.max(...bars.map((r) => r.getBBox().height)), \
           fill: getComputedStyle(last).fill, width: svg.getBoundingClientRect().width };",
        json!([]),
    );
    assert_eq!(chart["role"], "img");
    let label = chart["label"].as_str().unwrap();
    assert!(
        label.starts_with("Requests per day, last 90 days: 4 requests in all"),
        "{label}"
    );
    assert_eq!(chart["titled"], 90);
    assert!(
        chart["lastTitle"]
            .as_str()
            .unwrap()
            .ends_with(": 4 requests"),
        "{chart}"
    );
    assert_eq!(chart["lastCount"], "4");
    assert_eq!(chart["zero"], 89);
    assert_eq!(chart["tallest"], 100.0);
    assert_ne!(
        chart["fill"], "rgb(0, 0, 0)",
        "coloured by console.css: {chart}"
    );
    assert!(chart["width"].as_f64().unwrap() > 600.0, "{chart}");
    assert_eq!(
        b.text("#usage-summary"),
        "4 requests in the last 90 days (UTC)."
    );
    b.wait_for(
        "two address rows",
        "document.querySelectorAll('#usage-addresses tr').length === 2",
    );
    let rows = b.exec(
        "return [...document.querySelectorAll('#usage-addresses tr')].map((tr) => \
         [...tr.children].map((td) => td.textContent)).sort();",
        json!([]),
    );
    assert_eq!(rows[0][0], "127.0.0.2", "{rows}");
    assert_eq!(rows[0][3], "3");
    assert_eq!(rows[1][0], "127.0.0.3");
    assert_eq!(rows[1][3], "1");
    assert!(b
        .exec(
            "return document.getElementById('usage-addresses-empty').hidden;",
            json!([])
        )
        .as_bool()
        .unwrap());
    b.exec(
        "document.getElementById('usage-title').scrollIntoView();",
        json!([]),
    );
    b.screenshot("token-detail-usage-1280");
    b.set_size(390, 844);
    b.exec(
        "document.getElementById('usage-title').scrollIntoView();",
        json!([]),
    );
    b.screenshot("token-detail-usage-390");
    assert_eq!(
        b.exec(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            json!([])
        ),
        json!(true),
        "no horizontal scrolling at 390 px"
    );
    let narrow = b.exec(
        "return document.querySelector('#usage-chart svg').getBoundingClientRect().width;",
        json!([]),
    );
    assert!(narrow.as_f64().unwrap() > 300.0, "{narrow}");
    assert_eq!(
        b.exec("return window.__cspViolations;", json!([])),
        json!([]),
        "no CSP violation"
    );
    b.set_size(1280, 900);
}

/// Issue 19: the create dialog takes allowed networks (one per line) and read-only access,
/// a bad prefix is shown on its line, the list marks read-only tokens, and the token's page
/// shows and edits both (a PATCH the API then reports).
#[test]
fn console_sets_and_edits_allowed_networks_and_read_only_access() {
    let Some(b) = Browser::start(1280, 900) else {
        return;
    };
    let svc = Service::start(&[]);
    let admin = crate::support::admin_basic(&svc);
    sign_in(&b, &svc);

    b.click("#create-button");
    b.wait_for(
        "create dialog",
        "document.getElementById('create-dialog').open",
    );
    b.type_into("#token-name", "edge reader");
    b.exec(
        "document.getElementById('token-cidrs').value = arguments[0];\
         document.getElementById('token-access').value = 'read';",
        json!(["10.0.0.0/8\n10.0.0.1/8"]),
    );
    b.click("#create-submit");
    b.wait_for(
        "the prefix error",
        "document.getElementById('token-cidrs-error').textContent.length > 0",
    );
    let error = b.text("#token-cidrs-error");
    assert!(
        error.starts_with("Line 2:") && error.contains("10.0.0.0/8"),
        "{error}"
    );
    b.screenshot("issue19-create-dialog-prefix-error");
    b.exec(
        "document.getElementById('token-cidrs').value = arguments[0];",
        json!(["10.0.0.0/8\n2001:DB8::/32"]),
    );
    b.click("#create-submit");
    b.wait_for("secret", "!document.getElementById('secret-view').hidden");
    b.click("#secret-done");
    b.wait_for(
        "the read-only marker",
        "document.querySelector('#token-rows td.name .badge.readonly') !== null",
    );
    assert_eq!(b.text("#token-rows td.name .badge.readonly"), "read-only");
    b.screenshot("issue19-list-read-only-marker");
    let id = b
        .exec(
            "return document.querySelector('#token-rows tr').dataset.id;",
            json!([]),
        )
        .as_str()
        .unwrap()
        .to_string();
    let view = api_token(&svc, &admin, &id);
    assert_eq!(view["access"], "read");
    assert_eq!(view["allowedCidrs"], json!(["10.0.0.0/8", "2001:db8::/32"]));

    b.click(&format!("#token-rows tr[data-id='{id}'] td.name a"));
    b.wait_for(
        "the token page",
        "!document.getElementById('detail-body').hidden",
    );
    assert!(b.text("#detail-access").starts_with("Read-only"));
    assert_eq!(b.text("#detail-cidrs"), "10.0.0.0/8\n2001:db8::/32");
    b.exec(
        "document.getElementById('edit-cidrs').value = arguments[0];\
         document.getElementById('edit-access').value = 'full';",
        json!(["192.0.2.0/24"]),
    );
    b.click("#restrictions-save");
    b.wait_for(
        "saved",
        "document.getElementById('restrictions-saved').textContent === 'Saved.'",
    );
    assert_eq!(b.text("#detail-cidrs"), "192.0.2.0/24");
    assert_eq!(b.text("#detail-access"), "Full");
    let view = api_token(&svc, &admin, &id);
    assert_eq!(view["access"], "full");
    assert_eq!(view["allowedCidrs"], json!(["192.0.2.0/24"]));
    // A bad edit is shown, and changes nothing.
    b.exec(
        "document.getElementById('edit-cidrs').value = 'not-a-network';",
        json!([]),
    );
    b.click("#restrictions-save");
    b.wait_for(
        "the edit error",
        "document.getElementById('edit-cidrs-error').textContent.length > 0",
    );
    assert!(b.text("#edit-cidrs-error").starts_with("Line 1:"));
    b.screenshot("issue19-token-page-restrictions");
    assert_eq!(
        api_token(&svc, &admin, &id)["allowedCidrs"],
        json!(["192.0.2.0/24"])
    );
    // Emptied: any address again.
    b.exec(
        "document.getElementById('edit-cidrs').value = '';",
        json!([]),
    );
    b.click("#restrictions-save");
    b.wait_for(
        "saved again",
        "document.getElementById('detail-cidrs').textContent === 'Any address'",
    );
    assert_eq!(api_token(&svc, &admin, &id)["allowedCidrs"], json!([]));
}
