//! The coordinators' console (`/review/elections`, `/review/invites`, `/review/devices`)
//! against the real server: every route for every role (anonymous, coordinator, coordinator of
//! another region, supervisor, admin), CSRF on every form, markup in every field escaped,
//! refused imports that name their row and store nothing, invites created, listed and
//! cancelled, devices revoked, each action in the audit trail; and the whole evening in a real
//! browser (tests/browser/console.mjs), whose QR codes are decoded with ZBar and enrolled from
//! the Python bindings.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use hattama_tests::review::{Browser, Page, add_user, election, enrolled_device, photo, upload};
use hattama_tests::server::TestServer;
use serde_json::{Value, json};

/// Posts a multipart form (the CSRF token and a file) as a browser's file upload does.
fn post_file(b: &Browser, path: &str, csrf: &str, name: &str, bytes: &[u8]) -> Page {
    let boundary = "hattama-test-boundary-7c1f";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let cookies = b.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
    let r = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}{path}", b.url))
        .header("Cookie", cookies.join("; "))
        .header("Accept-Language", "en")
        .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let location =
        r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    Page { status, location, body: r.text().unwrap(), set_cookies: Vec::new(), retry_after: None }
}

/// The hidden CSRF token of a page, or the session's (from the queue) when the page has none.
fn csrf_of(b: &mut Browser) -> String {
    b.csrf()
}

/// The `data-code`s of a cards page.
fn card_codes(body: &str) -> Vec<String> {
    body.split("data-code=\"").skip(1).map(|s| s.split('"').next().unwrap().to_owned()).collect()
}

const MARKUP: &str = "<script>alert(1)</script>";

/// An election whose names, regions, districts and addresses hold markup.
fn hostile_election() -> Value {
    let mut e = election(4);
    e["id"] = json!("hostile");
    e["names"] = json!({ "kk": MARKUP, "ru": MARKUP, "en": MARKUP });
    for p in e["precincts"].as_array_mut().unwrap() {
        p["region"] = json!(format!("R{MARKUP}"));
        p["district"] = json!(format!("D{MARKUP}"));
        p["address"] = json!(format!("A{MARKUP}"));
    }
    e
}

fn assert_escaped(page: &Page, what: &str) {
    assert!(!page.body.contains(MARKUP), "{what}: raw markup in the page:\n{}", page.body);
    assert!(!page.body.contains("<script>alert"), "{what}: raw markup in the page");
}

#[test]
fn console_routes_answer_only_the_right_roles_with_csrf_and_escaping() {
    let server = TestServer::start_with(&election(12), &[]);
    for (u, role, regions) in [
        ("root", "admin", &[][..]),
        ("sam", "supervisor", &[]),
        ("alice", "coordinator", &[]),
        ("dave", "coordinator", &["Almaty"]),
        ("olga", "coordinator", &["Astana"]),
    ] {
        add_user(&server.data_dir, u, u, role, regions);
    }
    let mut device = enrolled_device(&server, 3, &["p0001"]);
    upload(&server, &mut device, "p0001", &photo(1), |_| {});
    let id = hattama_core::evidence::Sha256Hash::of(&device.public().0).to_hex();

    let mut root = Browser::login(&server.url, "root");
    let root_csrf = csrf_of(&mut root);
    // A first batch, so that its cards page exists.
    let made = root.post(
        "/review/invites",
        &[("csrf", &root_csrf), ("election", "e2e"), ("numbers", "2-3"), ("per_precinct", "1")],
    );
    assert_eq!(made.status, 303, "{made:?}");
    // (batch 1: the device's invite, made with `invite create`: one implementation.)
    assert_eq!(made.location, "/review/invites/cards?batch=2");

    let reads = [
        "/review/elections".to_owned(),
        "/review/invites".to_owned(),
        "/review/devices".to_owned(),
        format!("/review/devices/{id}"),
        "/review/users".to_owned(),
        "/review/dashboard".to_owned(),
    ];
    let cards = "/review/invites/cards?batch=2";

    // Anonymous: every page and form sends to the login page.
    let mut anon = Browser::new(&server.url);
    for path in reads.iter().map(String::as_str).chain([cards]) {
        let p = anon.get(path);
        assert_eq!(p.status, 303, "anonymous GET {path}");
        assert!(p.location.starts_with("/review/login"), "anonymous GET {path}: {}", p.location);
    }
    for path in
        ["/review/invites", "/review/invites/cancel", &format!("/review/devices/{id}/revoke")]
    {
        let p = anon.post(path, &[("csrf", "x"), ("code", "x"), ("reason", "x")]);
        assert_eq!(p.status, 303, "anonymous POST {path}");
    }
    for path in ["/review/elections/definition", "/review/elections/official"] {
        let p = post_file(&anon, path, "x", "e.json", b"{}");
        assert_eq!(p.status, 303, "anonymous POST {path}");
    }

    // Coordinators (of every region, of Almaty, of Astana where the device is): no console.
    for user in ["alice", "dave", "olga"] {
        let mut b = Browser::login(&server.url, user);
        let csrf = csrf_of(&mut b);
        let queue = b.get("/review");
        assert!(!queue.body.contains("href=\"/review/invites\""), "{user} sees no console link");
        for path in reads.iter().map(String::as_str).chain([cards]) {
            assert_eq!(b.get(path).status, 403, "{user} GET {path}");
        }
        let code = card_codes(&root.get(cards).body).remove(0);
        for (path, form) in [
            ("/review/invites", vec![("election", "e2e"), ("numbers", "1"), ("per_precinct", "1")]),
            ("/review/invites/cancel", vec![("code", code.as_str())]),
            (&format!("/review/devices/{id}/revoke"), vec![("reason", "lost")]),
        ] {
            let mut form = form.clone();
            form.push(("csrf", &csrf));
            assert_eq!(b.post(path, &form).status, 403, "{user} POST {path}");
        }
        for path in ["/review/elections/definition", "/review/elections/official"] {
            let p =
                post_file(&b, path, &csrf, "e.json", &serde_json::to_vec(&election(3)).unwrap());
            assert_eq!(p.status, 403, "{user} POST {path}");
        }
    }

    // The supervisor reads, without the codes of unused invites, and changes nothing.
    let mut sam = Browser::login(&server.url, "sam");
    let sam_csrf = csrf_of(&mut sam);
    for path in &reads {
        let p = sam.get(path);
        assert_eq!(p.status, 200, "sam GET {path}");
        assert!(!p.body.contains("action=\"/review/invites\""), "no invite form for sam");
        assert!(!p.body.contains("/revoke\""), "no revoke form for sam");
        assert!(!p.body.contains("enctype=\"multipart/form-data\""), "no import form for sam");
    }
    let code = card_codes(&root.get(cards).body).remove(0);
    assert!(!sam.get("/review/invites").body.contains(&code), "sam sees no unused code");
    assert_eq!(sam.get(cards).status, 403, "sam may not print codes");
    assert_eq!(
        sam.post(
            "/review/invites",
            &[("csrf", &sam_csrf), ("election", "e2e"), ("numbers", "1"), ("per_precinct", "1")]
        )
        .status,
        403
    );
    assert_eq!(
        sam.post("/review/invites/cancel", &[("csrf", &sam_csrf), ("code", &code)]).status,
        403
    );
    assert_eq!(
        sam.post(&format!("/review/devices/{id}/revoke"), &[("csrf", &sam_csrf), ("reason", "x")])
            .status,
        403
    );
    let p = post_file(&sam, "/review/elections/definition", &sam_csrf, "e.json", b"{}");
    assert_eq!(p.status, 403);

    // The admin: every page; a form without this session's token is refused and does nothing.
    for path in reads.iter().map(String::as_str).chain([cards]) {
        assert_eq!(root.get(path).status, 200, "root GET {path}");
    }
    for bad in ["", "forged", &sam_csrf] {
        let p = root.post(
            "/review/invites",
            &[("csrf", bad), ("election", "e2e"), ("numbers", "1"), ("per_precinct", "1")],
        );
        assert_eq!(p.status, 403, "invites with csrf {bad:?}");
        assert_eq!(
            root.post("/review/invites/cancel", &[("csrf", bad), ("code", &code)]).status,
            403
        );
        let p =
            root.post(&format!("/review/devices/{id}/revoke"), &[("csrf", bad), ("reason", "x")]);
        assert_eq!(p.status, 403);
        for path in ["/review/elections/definition", "/review/elections/official"] {
            let p =
                post_file(&root, path, bad, "e.json", &serde_json::to_vec(&election(3)).unwrap());
            assert_eq!(p.status, 403, "{path} with csrf {bad:?}");
        }
    }
    let list = root.get("/review/invites");
    assert_eq!(
        list.body.matches("data-state=\"console-invite-unused\"").count(),
        2,
        "no new batch"
    );
    assert!(list.body.contains(&code), "not cancelled");
    assert!(
        !root.get(&format!("/review/devices/{id}")).body.contains("id=\"device-state\"><strong")
    );
    assert!(!root.get("/review/elections").body.contains("data-election=\"e2e\" hidden"));

    // Markup in every field of a definition, a file name and a pasted list is shown as text.
    let p = post_file(
        &root,
        "/review/elections/definition",
        &root_csrf,
        &format!("{MARKUP}.json"),
        &serde_json::to_vec(&hostile_election()).unwrap(),
    );
    assert_eq!(p.status, 303, "{p:?}");
    let csv = "election,precinct,line,value\nhostile,p0001,1,5\n";
    let p = post_file(
        &root,
        "/review/elections/official",
        &root_csrf,
        &format!("{MARKUP}.csv"),
        csv.as_bytes(),
    );
    assert_eq!(p.status, 303, "{p:?}");
    let elections = root.get("/review/elections");
    assert_escaped(&elections, "elections");
    assert!(elections.body.contains("alert(1)"), "the names are shown, escaped");
    let p = root.post(
        "/review/invites",
        &[("csrf", &root_csrf), ("election", "hostile"), ("list", MARKUP), ("per_precinct", "1")],
    );
    assert_eq!(p.status, 422);
    assert_escaped(&p, "invite error");
    let p = root.post(
        "/review/invites",
        &[("csrf", &root_csrf), ("election", "hostile"), ("list", "1 2"), ("per_precinct", "1")],
    );
    assert_eq!(p.status, 303);
    for path in [
        p.location.as_str(),
        "/review/invites",
        "/review/devices",
        &format!("/review/devices/{id}"),
    ] {
        let page = root.get(path);
        assert_eq!(page.status, 200, "{path}");
        assert_escaped(&page, path);
    }
    let p = root
        .post(&format!("/review/devices/{id}/revoke"), &[("csrf", &root_csrf), ("reason", MARKUP)]);
    assert_eq!(p.status, 303);
    assert_escaped(&root.get(&format!("/review/devices/{id}")), "revoked device");
}

#[test]
fn refused_imports_name_their_row_and_store_nothing() {
    let server = TestServer::start_with(&election(6), &[]);
    add_user(&server.data_dir, "root", "Root", "admin", &[]);
    let mut root = Browser::login(&server.url, "root");
    let csrf = csrf_of(&mut root);

    // Official results: a good file is version 1; each bad one is refused with its row named.
    let good = "election,precinct,line,value\ne2e,p0001,1,1000\ne2e,p0002,1,900\n";
    let p = post_file(&root, "/review/elections/official", &csrf, "v1.csv", good.as_bytes());
    assert_eq!(p.status, 303, "{p:?}");
    assert_eq!(p.location, "/review/elections?done=official");
    for (file, named) in [
        ("election,precinct,line,value\ne2e,p0001,1,7\ne2e,p0099,1,5\n", "row 3"),
        ("election,precinct,line,value\ne2e,p0001,1,7\ne2e,p0002,1,-5\n", "row 3"),
        ("election,precinct,line,value\ne2e,p0001,1,7\ne2e,p0001,1,8\n", "row 3"),
        ("election,precinct,line,value\ne2e,p0001,1,7\ne2e,p0002,99,8\n", "row 3"),
        ("election,precinct,line,value\ne2e,p0001,1,7\nother,p0002,1,8\n", "row 3"),
        ("precinct,line,value\n", "header"),
    ] {
        let p = post_file(&root, "/review/elections/official", &csrf, "bad.csv", file.as_bytes());
        assert_eq!(p.status, 422, "{file}");
        assert!(p.body.contains("id=\"refused\""), "{file}");
        assert!(p.body.contains(named), "{file}: the refusal names {named}:\n{}", p.body);
    }
    let page = root.get("/review/elections");
    assert_eq!(
        page.body.matches("<td class=\"num\" data-label=\"Version\">").count(),
        1,
        "one version"
    );
    let run = hattama_tests::server::admin(&server.data_dir, &["capture", "list", "--json"]);
    assert_eq!(run.code, Some(0));

    // A definition: malformed JSON names its line; a duplicate precinct is named; nothing stored.
    let p = post_file(
        &root,
        "/review/elections/definition",
        &csrf,
        "e.json",
        b"{\n\"id\": \"x\",\n oops}",
    );
    assert_eq!(p.status, 422);
    assert!(p.body.contains("line 3"), "the JSON error names its line:\n{}", p.body);
    let mut dup = election(3);
    dup["id"] = json!("dup");
    let first = dup["precincts"][0].clone();
    dup["precincts"].as_array_mut().unwrap().push(first);
    let p = post_file(
        &root,
        "/review/elections/definition",
        &csrf,
        "dup.json",
        &serde_json::to_vec(&dup).unwrap(),
    );
    assert_eq!(p.status, 422);
    assert!(p.body.contains("precinct p0001 appears twice"), "{}", p.body);
    let page = root.get("/review/elections");
    assert!(!page.body.contains("data-election=\"dup\""), "nothing stored");
    assert!(!page.body.contains("data-election=\"x\""), "nothing stored");

    // Importing the same results again changes nothing; new ones are version 2.
    let p = post_file(&root, "/review/elections/official", &csrf, "v1.csv", good.as_bytes());
    assert_eq!(p.location, "/review/elections?done=unchanged");
    let v2 = good.replace("1000", "1001");
    let p = post_file(&root, "/review/elections/official", &csrf, "v2.csv", v2.as_bytes());
    assert_eq!(p.location, "/review/elections?done=official");
    let page = root.get("/review/elections");
    assert_eq!(page.body.matches("<td class=\"num\" data-label=\"Version\">").count(), 2);

    let audit: Value = serde_json::from_str(&root.get("/review/audit.json").body).unwrap();
    let actions: Vec<&str> =
        audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "official-import").count(), 3, "{actions:?}");
}

#[test]
fn invites_are_created_listed_cancelled_and_devices_revoked_with_an_audit_trail() {
    let server = TestServer::start_with(&election(12), &[]);
    add_user(&server.data_dir, "root", "Root", "admin", &[]);
    let mut root = Browser::login(&server.url, "root");
    let csrf = csrf_of(&mut root);

    // Refusals name what is wrong and create nothing.
    for (form, says) in [
        (vec![("list", "p0001 p0404")], "“p0404” is neither"),
        (vec![("numbers", "9-3")], "“9-3” is not a number"),
        (vec![("region", "Atlantis")], "No precinct matches"),
        (vec![("numbers", "1"), ("per_precinct", "0")], "must be 1 to 50"),
    ] {
        let mut form = form.clone();
        form.extend([("csrf", csrf.as_str()), ("election", "e2e")]);
        if !form.iter().any(|(k, _)| *k == "per_precinct") {
            form.push(("per_precinct", "2"));
        }
        let p = root.post("/review/invites", &form);
        assert_eq!(p.status, 422, "{form:?}");
        assert!(p.body.contains(says), "{form:?}: {}", p.body);
    }
    assert!(root.get("/review/invites").body.contains("id=\"no-invites\""));

    // By region: every Almaty precinct, two each; by pasted list.
    let p = root.post(
        "/review/invites",
        &[("csrf", &csrf), ("election", "e2e"), ("region", "Almaty"), ("per_precinct", "2")],
    );
    assert_eq!(p.status, 303);
    let almaty = election(12)["precincts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["region"] == "Almaty")
        .count();
    let cards = root.get(&p.location);
    let codes = card_codes(&cards.body);
    assert_eq!(codes.len(), 2 * almaty);
    assert_eq!(cards.body.matches("<svg class=\"qr\"").count(), codes.len(), "a QR code per card");
    let p = root.post(
        "/review/invites",
        &[("csrf", &csrf), ("election", "e2e"), ("list", "p0001\n2, 3"), ("per_precinct", "1")],
    );
    let second_cards = p.location.clone();
    let second = card_codes(&root.get(&second_cards).body);
    assert_eq!(second.len(), 3);

    // Cancel one: it enrolls nothing; another enrolls, and the list says by which device.
    let p = root.post("/review/invites/cancel", &[("csrf", &csrf), ("code", &second[0])]);
    assert_eq!(p.status, 303);
    assert_eq!(
        root.post("/review/invites/cancel", &[("csrf", &csrf), ("code", &second[0])]).status,
        404
    );
    let device = hattama_tests::raw::RawDevice::new(9);
    let refused = device.enroll(&server.url, &second[0]);
    // A cancelled code answers exactly as a code that never existed.
    let unknown = device.enroll(&server.url, "AAAA-BBBB-CCCC-DDDD-EEEE");
    assert_eq!((refused.status, refused.code()), (403, "bad_code"), "{refused:?}");
    assert_eq!(refused.body, unknown.body, "a cancelled code says no more than a bad one");
    let ok = device.enroll(&server.url, &second[1]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        root.post("/review/invites/cancel", &[("csrf", &csrf), ("code", &second[1])]).status,
        404,
        "a used code is not cancelled"
    );
    let list = root.get("/review/invites");
    let fingerprint = device.public().fingerprint();
    assert!(list.body.contains(&fingerprint), "the device that used the code is named");
    assert_eq!(list.body.matches("data-state=\"console-invite-used\"").count(), 1);
    assert_eq!(list.body.matches("data-state=\"console-invite-cancelled\"").count(), 1);
    assert_eq!(list.body.matches("data-state=\"console-invite-unused\"").count(), 2 * almaty + 1);
    // The batch's cards now hold only the unused one.
    assert_eq!(card_codes(&root.get(&second_cards).body), vec![second[2].clone()]);

    // The device uploads; its page shows it; revoked (a reason is required), it uploads no more.
    let mut device = device;
    let precinct = "p0002";
    upload(&server, &mut device, precinct, &photo(5), |_| {});
    let id = hattama_core::evidence::Sha256Hash::of(&device.public().0).to_hex();
    let page = root.get(&format!("/review/devices/{id}"));
    assert!(page.body.contains("id=\"device-captures\">1<"), "{}", page.body);
    let p =
        root.post(&format!("/review/devices/{id}/revoke"), &[("csrf", &csrf), ("reason", "  ")]);
    assert_eq!(p.status, 422);
    let p = root.post(
        &format!("/review/devices/{id}/revoke"),
        &[("csrf", &csrf), ("reason", "phone stolen")],
    );
    assert_eq!(p.status, 303);
    assert!(
        root.get(&format!("/review/devices/{id}")).body.contains("id=\"device-state\"><strong")
    );
    let signed = device.sign(precinct, &photo(6).1);
    let answer = device.upload(&server.url, &signed, &photo(6).0);
    assert_eq!((answer.status, answer.code()), (403, "device_revoked"), "{answer:?}");

    let audit: Value = serde_json::from_str(&root.get("/review/audit.json").body).unwrap();
    let events = audit.as_array().unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "invites-create").count(), 2, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "invite-cancel").count(), 1, "{actions:?}");
    let revoke = events.iter().find(|e| e["action"] == "device-revoke").unwrap();
    assert!(revoke["after"].as_str().unwrap().contains("phone stolen"));
    assert_eq!(revoke["user_name"], "Root");
}

/// Finds the row of `code` in a device page's refusals and returns its count cell's text.
fn refusal_count(page: &str, code: &str) -> Option<String> {
    let row = page.split(&format!("<tr data-code=\"{code}\">")).nth(1)?.split("</tr>").next()?;
    let count = row.split("<td class=\"num\"").nth(1)?.split('>').nth(1)?.split('<').next()?;
    Some(count.to_owned())
}

#[test]
fn a_device_page_lists_its_refused_uploads_by_code_and_its_missing_numbers() {
    let server = TestServer::start_with(&election(12), &[]);
    add_user(&server.data_dir, "root", "Root", "admin", &[]);
    add_user(&server.data_dir, "sam", "Sam", "supervisor", &[]);
    let mut device = enrolled_device(&server, 21, &["p0001"]);
    let id = hattama_core::evidence::Sha256Hash::of(&device.public().0).to_hex();
    let page_path = format!("/review/devices/{id}");
    let mut root = Browser::login(&server.url, "root");
    let page = root.get(&page_path);
    assert!(page.body.contains("id=\"no-refusals\""), "{}", page.body);
    assert!(page.body.contains("id=\"no-gaps\""), "{}", page.body);

    // Number 1 arrives; 2 and 3 are signed on the phone but never sent; 4 arrives.
    upload(&server, &mut device, "p0001", &photo(1), |_| {});
    device.sign("p0001", &photo(2).1);
    device.sign("p0001", &photo(3).1);
    upload(&server, &mut device, "p0001", &photo(4), |_| {});
    // Twice a station the device is not enrolled for.
    for seed in [5, 6] {
        let (bytes, info) = photo(seed);
        let signed = device.sign("p0002", &info);
        let answer = device.upload(&server.url, &signed, &bytes);
        assert_eq!((answer.status, answer.code()), (403, "precinct_not_assigned"), "{answer:?}");
    }
    // A device that never enrolled is refused, and nothing is kept of it (anyone makes keys).
    let mut stranger = hattama_tests::raw::RawDevice::new(22);
    let (bytes, info) = photo(7);
    let signed = stranger.sign("p0001", &info);
    assert_eq!(stranger.upload(&server.url, &signed, &bytes).code(), "device_unknown");

    let page = root.get(&page_path);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"device-refused\">2<"), "{}", page.body);
    assert_eq!(refusal_count(&page.body, "precinct_not_assigned").as_deref(), Some("2"));
    assert_eq!(refusal_count(&page.body, "device_unknown"), None);
    assert!(page.body.contains("<ul id=\"device-gaps\"><li>Nos. 2–3</li></ul>"), "{}", page.body);

    // Revoked, its next upload is refused and counted under its own code.
    let csrf = csrf_of(&mut root);
    let p =
        root.post(&format!("{page_path}/revoke"), &[("csrf", &csrf), ("reason", "lost in a taxi")]);
    assert_eq!(p.status, 303);
    let (bytes, info) = photo(8);
    let signed = device.sign("p0001", &info);
    assert_eq!(device.upload(&server.url, &signed, &bytes).code(), "device_revoked");
    let mut sam = Browser::login(&server.url, "sam");
    let page = sam.get(&page_path);
    assert_eq!(refusal_count(&page.body, "device_revoked").as_deref(), Some("1"));
    assert_eq!(refusal_count(&page.body, "precinct_not_assigned").as_deref(), Some("2"));
    assert!(page.body.contains("id=\"device-refused\">3<"), "{}", page.body);
    // The latest first: the revocation's refusal heads the table.
    let first = page.body.split("<tr data-code=\"").nth(1).unwrap();
    assert!(first.starts_with("device_revoked"), "{first}");
    // The list counts them too.
    let list = sam.get("/review/devices");
    let row = list.body.split(&format!("data-device=\"{id}\"")).nth(1).unwrap();
    assert!(row.contains("<strong class=\"bad\">3</strong>"), "{row}");
}

/// The generated Python bindings (`scripts/bindings`; tests/tests/ffi.rs checks their age).
fn python_bindings() -> std::path::PathBuf {
    let dir = hattama_tests::browser::repo_root().join("build/bindings/python");
    assert!(
        dir.join("libhattama_ffi.so").exists(),
        "{} has no bindings: run scripts/bindings first",
        dir.display()
    );
    dir
}

/// Runs `tests/ffi/python/console_enroll.py` (an observer's phone through the bindings).
fn phone(args: &[&str]) {
    let script = hattama_tests::browser::repo_root().join("tests/ffi/python/console_enroll.py");
    let out = std::process::Command::new("python3")
        .arg("-u")
        .arg(script)
        .args(args)
        .env("PYTHONPATH", python_bindings())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "console_enroll.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What ZBar reads in a PNG: one line per symbol, `QR-Code:` and its text.
fn zbar(file: &str) -> Vec<String> {
    let out = std::process::Command::new("zbarimg")
        .args(["--quiet", "-Sdisable", "-Sqrcode.enable", file])
        .output()
        .expect("run zbarimg (scripts/test installs Debian's zbar-tools)");
    assert!(out.status.success(), "zbarimg {file}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            l.strip_prefix("QR-Code:").unwrap_or_else(|| panic!("not a QR code: {l}")).to_owned()
        })
        .collect()
}

#[test]
fn an_admin_puts_observers_on_the_road_and_revokes_a_lost_phone_in_the_browser() {
    // A new deployment: only the admin's account, no election yet.
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "root", "Root Admin", "admin", &[]);
    let server = TestServer::start_on(dir.path(), "127.0.0.1:0");
    let work = tempfile::tempdir().unwrap();
    let definition = work.path().join("election.json");
    std::fs::write(
        &definition,
        serde_json::to_vec_pretty(&hattama_tests::fixtures::election("e2e", 12)).unwrap(),
    )
    .unwrap();
    // Ten precincts, by number, in an order of their own (seeded).
    let seed = 16u64;
    let mut numbers: Vec<u32> = (1..=12).collect();
    let mut state = seed;
    for i in (1..numbers.len()).rev() {
        state =
            state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        numbers.swap(i, (state >> 33) as usize % (i + 1));
    }
    numbers.truncate(10);
    println!("seed {seed}: precincts {numbers:?}");
    let list = numbers.iter().map(u32::to_string).collect::<Vec<_>>().join("\n");
    let config = json!({
        "act": "invite", "password": hattama_tests::review::PASSWORD,
        "out": work.path(), "definition": definition, "list": list, "per": 2,
    });
    hattama_tests::browser::run_script("console", &server.url, &[&config.to_string()]);

    // Every card's QR code, decoded by ZBar from the rendered page, is its own invite.
    let cards: Vec<Value> =
        serde_json::from_slice(&std::fs::read(work.path().join("cards.json")).unwrap()).unwrap();
    assert_eq!(cards.len(), 20);
    let mut seen = std::collections::BTreeSet::new();
    let mut per_precinct = std::collections::BTreeMap::<String, usize>::new();
    for card in &cards {
        let decoded = zbar(card["file"].as_str().unwrap());
        assert_eq!(decoded, vec![card["uri"].as_str().unwrap().to_owned()], "{card}");
        let (server_url, code) = hattama_core::sync::parse_invite(&decoded[0]).unwrap();
        assert_eq!(server_url, server.url);
        assert_eq!(code, card["code"].as_str().unwrap());
        assert_eq!(code, card["typed"].as_str().unwrap(), "the code spelled out is the QR's");
        assert!(seen.insert(code), "codes are distinct");
        *per_precinct.entry(card["number"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(per_precinct.len(), 10, "{per_precinct:?}");
    assert!(per_precinct.values().all(|n| *n == 2), "{per_precinct:?}");

    // A phone enrolls with the first card's QR code and syncs a real photo of its precinct.
    let first = &cards[0];
    let number: u32 = first["number"].as_str().unwrap().parse().unwrap();
    let precinct = hattama_tests::fixtures::precinct_id(number as usize);
    let store = work.path().join("phone");
    let photo = hattama_tests::sample_dir(&format!("{}/testdata", hattama_tests::GO_IMAGE))
        .join("video-001.jpeg");
    let photo = photo.to_str().unwrap();
    phone(&["enroll", store.to_str().unwrap(), first["uri"].as_str().unwrap(), &precinct, photo]);

    // The precinct is covered; the admin revokes the device from its page.
    let config = json!({
        "act": "revoke", "password": hattama_tests::review::PASSWORD,
        "out": work.path(), "precinct": precinct, "number": number,
    });
    hattama_tests::browser::run_script("console", &server.url, &[&config.to_string()]);

    // Its next upload is refused, and its page says so.
    phone(&["revoked", store.to_str().unwrap(), "-", &precinct, photo]);
    let config = json!({ "act": "refused", "password": hattama_tests::review::PASSWORD });
    hattama_tests::browser::run_script("console", &server.url, &[&config.to_string()]);
}

/// The password a users page shows once.
fn shown_password(page: &Page) -> String {
    let start = page.body.find("id=\"password\">").expect("a password shown") + 14;
    page.body[start..].split('<').next().unwrap().to_owned()
}

#[test]
fn admins_add_disable_and_reset_accounts_with_the_rules_of_the_user_command() {
    let server = TestServer::start_with(&election(4), &[]);
    for (u, role, regions) in [
        ("root", "admin", &[][..]),
        ("sam", "supervisor", &[]),
        ("dave", "coordinator", &["Almaty"]),
    ] {
        add_user(&server.data_dir, u, u, role, regions);
    }
    let mut root = Browser::login(&server.url, "root");
    let csrf = csrf_of(&mut root);

    // Who may: anonymous to the login page, a coordinator 403, the supervisor reads only.
    let mut anon = Browser::new(&server.url);
    assert_eq!(anon.get("/review/users").status, 303);
    for path in ["/review/users", "/review/users/disable", "/review/users/reset"] {
        assert_eq!(anon.post(path, &[("csrf", "x"), ("username", "dave")]).status, 303, "{path}");
    }
    let mut dave = Browser::login(&server.url, "dave");
    let dave_csrf = csrf_of(&mut dave);
    assert_eq!(dave.get("/review/users").status, 403);
    let mut sam = Browser::login(&server.url, "sam");
    let sam_csrf = csrf_of(&mut sam);
    let list = sam.get("/review/users");
    assert_eq!(list.status, 200);
    assert!(!list.body.contains("action=\"/review/users"), "no forms for the supervisor");
    for (b, token) in [(&mut dave, &dave_csrf), (&mut sam, &sam_csrf)] {
        for path in ["/review/users", "/review/users/disable", "/review/users/reset"] {
            let p = b.post(
                path,
                &[("csrf", token), ("username", "eve"), ("name", "Eve"), ("role", "admin")],
            );
            assert_eq!(p.status, 403, "{path}");
        }
    }
    // CSRF: the admin's forms without this session's token do nothing.
    for bad in ["", "forged", sam_csrf.as_str()] {
        for path in ["/review/users", "/review/users/disable", "/review/users/reset"] {
            let p = root.post(
                path,
                &[("csrf", bad), ("username", "dave"), ("name", "X"), ("role", "coordinator")],
            );
            assert_eq!(p.status, 403, "{path} with {bad:?}");
        }
    }
    assert_eq!(dave.get("/review").status, 200, "dave's session was not ended");

    // Add: the command's rules (name, regions only for coordinators), a taken name, markup.
    for (form, says) in [
        (vec![("username", "Eve!"), ("name", "Eve"), ("role", "coordinator")], "a-z 0-9"),
        (
            vec![("username", "eve"), ("name", "Eve"), ("role", "admin"), ("regions", "Almaty")],
            "only coordinators",
        ),
        (vec![("username", "dave"), ("name", "Dave 2"), ("role", "coordinator")], "is taken"),
    ] {
        let mut form = form.clone();
        form.push(("csrf", &csrf));
        let p = root.post("/review/users", &form);
        assert_eq!(p.status, 422, "{form:?}");
        assert!(p.body.contains(says), "{form:?}: {}", p.body);
    }
    let p = root.post(
        "/review/users",
        &[
            ("csrf", &csrf),
            ("username", "eve"),
            ("name", MARKUP),
            ("role", "coordinator"),
            ("regions", "Astana, Almaty"),
        ],
    );
    assert_eq!(p.status, 200, "{p:?}");
    assert_escaped(&p, "users");
    let password = shown_password(&p);
    assert_eq!(password.len(), 20);
    let mut eve = Browser::new(&server.url);
    assert_eq!(eve.try_login("eve", &password).status, 303, "the shown password works");
    assert!(root.get("/review/users").body.contains("Astana, Almaty"));
    assert!(!root.get("/review/users").body.contains(&password), "shown once only");

    // Reset: a new password works, the old one and the old session do not.
    let p = root.post("/review/users/reset", &[("csrf", &csrf), ("username", "eve")]);
    assert_eq!(p.status, 200);
    let second = shown_password(&p);
    assert_ne!(second, password);
    assert_eq!(eve.get("/review").status, 303, "the session ended");
    assert_eq!(Browser::new(&server.url).try_login("eve", &password).status, 401);
    assert_eq!(Browser::new(&server.url).try_login("eve", &second).status, 303);

    // Disable: not oneself; another account cannot log in any more.
    let p = root.post("/review/users/disable", &[("csrf", &csrf), ("username", "root")]);
    assert_eq!(p.status, 422);
    let p = root.post("/review/users/disable", &[("csrf", &csrf), ("username", "dave")]);
    assert_eq!((p.status, p.location.as_str()), (303, "/review/users?done=disabled"));
    assert_eq!(dave.get("/review").status, 303, "dave's session ended");
    assert_eq!(
        Browser::new(&server.url).try_login("dave", hattama_tests::review::PASSWORD).status,
        401
    );
    assert_eq!(
        root.post("/review/users/disable", &[("csrf", &csrf), ("username", "nobody")]).status,
        404
    );

    let audit: Value = serde_json::from_str(&root.get("/review/audit.json").body).unwrap();
    let by_root: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["user_name"] == "root")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["console-user-add", "console-user-reset", "console-user-disable"] {
        assert!(by_root.contains(&action), "{action} by root in {by_root:?}");
    }
}
