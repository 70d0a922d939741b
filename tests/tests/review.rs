//! The coordinators' review UI against the real server, with real captures uploaded by signed
//! devices: authorization of every route for every role, CSRF, session expiry, login
//! throttling, escaping, the flags, the double entry and the audit trail over HTTP, the admin
//! commands, and the whole flow in a real browser (tests/browser/review.mjs).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;

use hattama_tests::browser;
use hattama_tests::review::{
    Browser, PASSWORD, add_user, capture_links, election, enrolled_device, photo, upload,
};
use hattama_tests::server::{TestServer, admin};

/// A server with accounts and captures:
/// - `alice`, `bob`, `carol`: coordinators of every region; `dave`: coordinator of Almaty only;
///   `sam`: supervisor; `root`: admin.
/// - p0001 (Astana): two pages; p0002 (Shymkent): one page; p0004 (Almaty): one page.
struct Fixture {
    server: TestServer,
    p1: Vec<String>,
    p2: String,
    p4: String,
}

fn fixture_with(env: &[(&str, &str)]) -> Fixture {
    let server = TestServer::start_with(&election(8), env);
    for (u, name, role, regions) in [
        ("alice", "Alice Abenova", "coordinator", &[][..]),
        ("bob", "Bob Bekov", "coordinator", &[]),
        ("carol", "Carol Sarsen", "coordinator", &[]),
        ("dave", "Dave Dauletov", "coordinator", &["Almaty"]),
        ("sam", "Sam Supervisor", "supervisor", &[]),
        ("root", "Root Admin", "admin", &[]),
    ] {
        add_user(&server.data_dir, u, name, role, regions);
    }
    let mut d1 = enrolled_device(&server, 1, &["p0001", "p0002"]);
    let mut d4 = enrolled_device(&server, 4, &["p0004"]);
    let p1 = (1..=2)
        .map(|page| {
            upload(&server, &mut d1, "p0001", &photo(page), |m| {
                m.page = hattama_core::evidence::Page { count: 2, number: page };
            })
        })
        .collect();
    let p2 = upload(&server, &mut d1, "p0002", &photo(3), |_| {});
    let p4 = upload(&server, &mut d4, "p0004", &photo(4), |_| {});
    Fixture { server, p1, p2, p4 }
}

fn fixture() -> Fixture {
    fixture_with(&[])
}

fn values(pairs: &[(&str, u64)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (format!("line:{k}"), v.to_string())).collect()
}

/// A consistent protocol of the fixture template (3 candidates).
fn good_protocol() -> Vec<(&'static str, u64)> {
    vec![
        ("1", 1000),
        ("2", 900),
        ("3", 700),
        ("4", 200),
        ("5", 690),
        ("6", 10),
        ("7.1", 400),
        ("7.2", 200),
        ("7.3", 50),
        ("8", 30),
    ]
}

/// The value of the first hidden field `name` in `body` after `from`.
fn hidden(body: &str, from: &str, name: &str) -> Option<String> {
    let body = &body[body.find(from)?..];
    let key = format!("name=\"{name}\" value=\"");
    let start = body.find(&key)? + key.len();
    body[start..].split('"').next().map(str::to_owned)
}

/// What a capture's page was rendered from, as its forms carry it: the newest decision's id
/// and the precinct's transcription state (`pending` if the page has no entry form).
fn seen(b: &mut Browser, capture: &str) -> (String, String) {
    let page = b.get(&format!("/review/captures/{capture}"));
    let decision = hidden(&page.body, "", "seen").unwrap_or_else(|| "0".into());
    let entry = hidden(&page.body, "id=\"entry-form\"", "seen").unwrap_or_else(|| "pending".into());
    (decision, entry)
}

fn post_entry_page(
    b: &mut Browser,
    capture: &str,
    pairs: &[(String, String)],
    reason: &str,
) -> hattama_tests::review::Page {
    let (_, seen) = seen(b, capture);
    let csrf = b.csrf();
    let mut form = pairs.to_vec();
    form.push(("csrf".into(), csrf));
    form.push(("reason".into(), reason.into()));
    form.push(("seen".into(), seen));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    b.post(&format!("/review/captures/{capture}/entry"), &form)
}

fn post_entry(b: &mut Browser, capture: &str, pairs: &[(&str, u64)], reason: &str) -> u16 {
    post_entry_page(b, capture, &values(pairs), reason).status
}

fn decide(b: &mut Browser, capture: &str, kind: &str, reason: &str) -> u16 {
    let (seen, _) = seen(b, capture);
    decide_seen(b, capture, kind, reason, &seen).status
}

fn decide_seen(
    b: &mut Browser,
    capture: &str,
    kind: &str,
    reason: &str,
    seen: &str,
) -> hattama_tests::review::Page {
    let csrf = b.csrf();
    b.post(
        &format!("/review/captures/{capture}/decision"),
        &[("csrf", &csrf), ("kind", kind), ("reason", reason), ("seen", seen)],
    )
}

#[test]
fn every_route_answers_only_the_right_roles() {
    let f = fixture();
    let url = &f.server.url;
    let capture = &f.p1[0];
    let get_routes = [
        "/review".to_owned(),
        format!("/review/captures/{capture}"),
        "/review/audit.csv".to_owned(),
        "/review/audit.json".to_owned(),
    ];
    let post_routes = [
        format!("/review/captures/{capture}/decision"),
        format!("/review/captures/{capture}/entry"),
        "/review/logout".to_owned(),
    ];

    // Anonymous: every page and form leads to the login page, nothing else.
    let mut anon = Browser::new(url);
    for path in &get_routes {
        let page = anon.get(path);
        assert_eq!(page.status, 303, "anonymous GET {path}");
        assert!(page.location.starts_with("/review/login?next="), "{path}: {}", page.location);
    }
    for path in &post_routes {
        let page = anon.post(path, &[("csrf", "x"), ("kind", "accepted")]);
        assert_eq!(page.status, 303, "anonymous POST {path}");
        assert!(page.location.starts_with("/review/login"), "{path}");
    }
    // A forged session cookie is no session.
    anon.cookies.push(("hattama_session".into(), "forged".into()));
    assert_eq!(anon.get("/review").status, 303);

    // A coordinator of another region sees none of p0001 and may do nothing to it.
    let mut dave = Browser::login(url, "dave");
    let queue = dave.get("/review");
    assert_eq!(queue.status, 200);
    assert_eq!(capture_links(&queue.body), vec![f.p4.clone()], "only Almaty's capture");
    assert_eq!(dave.get(&format!("/review/captures/{capture}")).status, 403);
    assert_eq!(decide(&mut dave, capture, "accepted", ""), 403);
    assert_eq!(post_entry(&mut dave, capture, &good_protocol(), ""), 403);
    assert_eq!(dave.get("/review/audit.csv").status, 403);
    assert_eq!(dave.get("/review/audit.json").status, 403);
    // … but everything in Almaty.
    assert_eq!(dave.get(&format!("/review/captures/{}", f.p4)).status, 200);
    assert_eq!(decide(&mut dave, &f.p4, "accepted", ""), 303);

    // A supervisor reads everything and changes nothing.
    let mut sam = Browser::login(url, "sam");
    assert_eq!(capture_links(&sam.get("/review").body).len(), 4);
    let page = sam.get(&format!("/review/captures/{capture}"));
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("id=\"entry-form\""), "no entry form for a supervisor");
    assert!(!page.body.contains("id=\"accept\""), "no decision form for a supervisor");
    assert_eq!(decide(&mut sam, capture, "accepted", ""), 403);
    assert_eq!(post_entry(&mut sam, capture, &good_protocol(), ""), 403);
    assert_eq!(sam.get("/review/audit.csv").status, 200);
    assert_eq!(sam.get("/review/audit.json").status, 200);

    // A coordinator of every region reviews but does not export the audit trail; an admin does.
    let mut alice = Browser::login(url, "alice");
    assert_eq!(alice.get(&format!("/review/captures/{capture}")).status, 200);
    assert_eq!(decide(&mut alice, capture, "accepted", ""), 303);
    assert_eq!(alice.get("/review/audit.csv").status, 403);
    let mut root = Browser::login(url, "root");
    assert_eq!(decide(&mut root, &f.p2, "flagged", "check the stamp"), 303);
    assert_eq!(root.get("/review/audit.csv").status, 200);

    // Unknown captures and malformed ids are 404 pages, not errors.
    assert_eq!(alice.get(&format!("/review/captures/{}", "0".repeat(64))).status, 404);
    assert_eq!(alice.get("/review/captures/nothex").status, 404);

    // Logging out ends the session on the server, not only in the browser.
    let session = alice.cookies.iter().find(|(k, _)| k == "hattama_session").unwrap().clone();
    let csrf = alice.csrf();
    assert_eq!(alice.post("/review/logout", &[("csrf", &csrf)]).status, 303);
    let mut replay = Browser::new(url);
    replay.cookies.push(session);
    assert_eq!(replay.get("/review").status, 303, "a logged-out token is dead");
}

#[test]
fn forms_without_the_right_csrf_token_are_refused() {
    let f = fixture();
    let url = &f.server.url;
    let capture = &f.p1[0];

    // Login: the form's token must match its cookie.
    let mut b = Browser::new(url);
    let form = b.get("/review/login");
    let csrf = form.csrf();
    let login = |b: &mut Browser, token: &str| {
        b.post(
            "/review/login",
            &[("username", "alice"), ("password", PASSWORD), ("csrf", token), ("next", "/review")],
        )
    };
    assert_eq!(login(&mut b, "wrong").status, 403);
    let mut no_cookie = Browser::new(url);
    assert_eq!(login(&mut no_cookie, &csrf).status, 403, "a token without its cookie");
    let ok = login(&mut b, &csrf);
    assert_eq!(ok.status, 303);

    // Decisions, entries and logout need the session's token.
    let mut alice = Browser::login(url, "alice");
    for token in ["", "wrong", &csrf] {
        let page = alice.post(
            &format!("/review/captures/{capture}/decision"),
            &[("csrf", token), ("kind", "accepted")],
        );
        assert_eq!(page.status, 403, "decision with token {token:?}");
        assert!(page.body.contains("The form has expired"), "an HTML error page");
        let mut form = values(&good_protocol());
        form.push(("csrf".into(), token.into()));
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(alice.post(&format!("/review/captures/{capture}/entry"), &form).status, 403);
        assert_eq!(alice.post("/review/logout", &[("csrf", token)]).status, 403);
    }
    // Nothing happened.
    let page = alice.get(&format!("/review/captures/{capture}"));
    assert!(page.body.contains("No decision yet"));
    assert!(page.body.contains("not transcribed"));
    // A session's token does not work for another session.
    let mut bob = Browser::login(url, "bob");
    let alice_token = alice.csrf();
    let page = bob.post(
        &format!("/review/captures/{capture}/decision"),
        &[("csrf", &alice_token), ("kind", "accepted")],
    );
    assert_eq!(page.status, 403);
}

#[test]
fn sessions_expire() {
    let f = fixture_with(&[("HATTAMA__REVIEW__SESSION_TTL_SECS", "2")]);
    let mut alice = Browser::new(&f.server.url);
    let page = alice.try_login("alice", PASSWORD);
    assert_eq!(page.status, 303);
    let cookie = page.set_cookies.iter().find(|c| c.starts_with("hattama_session=")).unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=2"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(!cookie.contains("Secure"), "plain http on loopback: no Secure attribute");
    assert_eq!(alice.get("/review").status, 200);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // The browser would have dropped the cookie; the server refuses it anyway.
    let page = alice.get(&format!("/review/captures/{}", f.p2));
    assert_eq!(page.status, 303);
    assert_eq!(page.location, format!("/review/login?next=%2Freview%2Fcaptures%2F{}", f.p2));
}

#[test]
fn logins_are_throttled_after_repeated_failures() {
    let f = fixture();
    let url = &f.server.url;
    let mut b = Browser::new(url);
    for i in 0..5 {
        let page = b.try_login("alice", &format!("wrong password {i}"));
        assert_eq!(page.status, 401, "failure {i}");
        assert!(page.body.contains("Wrong user name or password"));
    }
    // Locked now, even with the right password …
    let page = b.try_login("alice", PASSWORD);
    assert_eq!(page.status, 429, "{page:?}");
    assert!(page.body.contains("Too many attempts"));
    // … while other people still log in from the same address.
    Browser::login(url, "bob");
    // Unknown names fail the same way (and are throttled too).
    assert_eq!(b.try_login("nobody", PASSWORD).status, 401);
    // The failures are in the audit trail.
    let mut root = Browser::login(url, "root");
    let csv = root.get("/review/audit.csv").body;
    assert_eq!(csv.matches("\"login_failed\"").count(), 6, "{csv}");
    assert!(!csv.contains("wrong password"), "passwords are never recorded");
}

#[test]
fn markup_in_notes_names_and_reasons_is_escaped_everywhere() {
    let server = TestServer::start_with(&election(4), &[]);
    let evil = "<script>alert(\"x\")</script> O'Neil & \"Co\"";
    add_user(&server.data_dir, "eve", evil, "coordinator", &[]);
    add_user(&server.data_dir, "alice", "Alice", "coordinator", &[]);
    let mut d = enrolled_device(&server, 7, &["p0001"]);
    let id = upload(&server, &mut d, "p0001", &photo(11), |m| {
        m.note = Some(evil.to_owned());
        m.transcription = Some(BTreeMap::from([("1".to_owned(), 5)]));
    });
    let mut eve = Browser::login(&server.url, "eve");
    assert_eq!(decide(&mut eve, &id, "flagged", evil), 303);
    // A hard-rule break with the reason in markup.
    let mut broken = good_protocol();
    broken[1].1 = 901;
    assert_eq!(post_entry(&mut eve, &id, &broken, evil), 303);
    let mut alice = Browser::login(&server.url, "alice");
    assert_eq!(post_entry(&mut alice, &id, &broken, evil), 303);

    let escaped =
        "&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62; O&#39;Neil &#38; &#34;Co&#34;";
    let pages = [
        ("/review".to_owned(), eve.get("/review")),
        (format!("/review/captures/{id}"), alice.get(&format!("/review/captures/{id}"))),
        (format!("/review/captures/{id}"), eve.get(&format!("/review/captures/{id}"))),
    ];
    for (path, page) in pages {
        assert_eq!(page.status, 200);
        assert!(!page.body.contains("<script>alert"), "{path} has raw markup");
        assert!(!page.body.contains("O'Neil"), "{path} has a raw quote");
        assert!(page.body.contains(escaped) || page.body.contains("&#60;script&#62;"), "{path}");
    }
    let page = alice.get(&format!("/review/captures/{id}"));
    assert!(page.body.contains(escaped), "the note, the flag's reason and the names");
    // The strict CSP is on every review page.
    let r = reqwest::blocking::get(format!("{}/review/login", server.url)).unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.starts_with("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
}

#[test]
fn double_entry_mismatch_goes_to_a_third_person() {
    let f = fixture();
    let url = &f.server.url;
    let capture = &f.p1[0];
    let mut alice = Browser::login(url, "alice");
    let mut bob = Browser::login(url, "bob");
    let mut carol = Browser::login(url, "carol");

    assert_eq!(post_entry(&mut alice, capture, &good_protocol(), ""), 303);
    let page = alice.get(&format!("/review/captures/{capture}"));
    assert!(page.body.contains("waiting for a second entry"));
    // Entering twice is refused.
    assert_eq!(post_entry(&mut alice, capture, &good_protocol(), ""), 422);
    // Blind: Bob sees the form, not Alice's numbers.
    let page = bob.get(&format!("/review/captures/{capture}"));
    assert!(page.body.contains("id=\"entry-form\""));
    assert!(!page.body.contains("id=\"dispute\""));
    assert!(page.body.contains("hidden until you have entered"));
    assert!(!page.body.contains("\"7.1\":400"), "Alice's values are not in Bob's page");

    let mut other = good_protocol();
    other[6].1 = 410; // 7.1
    other[9].1 = 20; // 8: still consistent
    assert_eq!(post_entry(&mut bob, capture, &other, ""), 303);
    let page = carol.get(&format!("/review/captures/{capture}"));
    assert!(page.body.contains("entries differ"));
    assert!(page.body.contains("id=\"dispute\""), "the third person sees both entries");
    assert!(page.body.contains("Alice Abenova") && page.body.contains("Bob Bekov"));
    // The first two may not resolve it.
    assert_eq!(post_entry(&mut bob, capture, &other, ""), 422);
    assert_eq!(post_entry(&mut carol, capture, &good_protocol(), ""), 303);
    let page = carol.get(&format!("/review/captures/{capture}"));
    assert!(page.body.contains("id=\"transcription-status\">verified"));
    // Verified: no more entries (a form made before is refused as stale).
    let mut root = Browser::login(url, "root");
    assert_eq!(post_entry(&mut root, capture, &good_protocol(), ""), 409);
    // Every entry is in the audit trail with who and what.
    let audit: serde_json::Value =
        serde_json::from_str(&root.get("/review/audit.json").body).unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["precinct"] == "p0001")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["entry", "entry", "entry_resolution"]);
    let db = rusqlite::Connection::open(f.server.data_dir.join("hattama-server.sqlite3")).unwrap();
    assert!(db.execute("DELETE FROM entries", []).is_err(), "entries are append-only");
    assert!(db.execute("UPDATE entries SET values_json = '{}'", []).is_err());
}

#[test]
fn hard_rules_block_verification_unless_a_reason_is_recorded() {
    let f = fixture();
    let url = &f.server.url;
    let capture = &f.p2;
    let mut broken = good_protocol();
    broken[1].1 = 950; // received 950 != issued 700 + cancelled 200
    let mut alice = Browser::login(url, "alice");
    let csrf = alice.csrf();
    let mut form = values(&broken);
    form.push(("csrf".into(), csrf));
    form.push(("seen".into(), "pending".into()));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let page = alice.post(&format!("/review/captures/{capture}/entry"), &form);
    assert_eq!(page.status, 422);
    assert!(page.body.contains("break a hard rule"), "{}", page.body);
    assert!(page.body.contains("Received = issued + cancelled (950 / 900)"));
    assert!(page.body.contains("value=\"950\""), "the numbers typed are kept");
    let page = alice.get(&format!("/review/captures/{capture}"));
    assert!(page.body.contains("not transcribed"), "nothing was stored");

    let reason = "The commission wrote 950 received; the stamp confirms it";
    assert_eq!(post_entry(&mut alice, capture, &broken, reason), 303);
    let mut bob = Browser::login(url, "bob");
    assert_eq!(post_entry(&mut bob, capture, &broken, reason), 303);
    let page = bob.get(&format!("/review/captures/{capture}"));
    assert!(page.body.contains("verified"));
    assert!(page.body.contains(reason), "the inconsistency note is shown");
    assert!(page.body.contains("Hard rule broken"));
    // Soft rules are shown, never block.
    let mut soft = good_protocol();
    soft[4].1 = 710; // in boxes 710 > issued 700 …
    soft[5].1 = 30; // … and still 710 = 30 + 650 + 30
    let mut carol = Browser::login(url, "carol");
    assert_eq!(post_entry(&mut carol, &f.p4, &soft, ""), 303);
    assert_eq!(post_entry(&mut alice, &f.p4, &soft, ""), 303);
    let page = alice.get(&format!("/review/captures/{}", f.p4));
    assert!(page.body.contains("In boxes ≤ issued (710 / 700)"), "{}", page.body);
}

#[test]
fn decisions_append_and_the_audit_trail_keeps_before_and_after() {
    let f = fixture();
    let url = &f.server.url;
    let capture = &f.p1[1];
    let mut alice = Browser::login(url, "alice");
    assert_eq!(decide(&mut alice, capture, "rejected", ""), 400, "a rejection needs a reason");
    // It says so on the page, whose reason starts unchosen.
    let (seen, _) = seen(&mut alice, capture);
    let refused = decide_seen(&mut alice, capture, "rejected", "", &seen);
    assert!(
        refused.body.contains("id=\"decision-error\">Not rejected yet: no reason was chosen."),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("<option value=\"\" selected>— choose a reason —</option>"),
        "no reason is preselected"
    );
    assert_eq!(decide(&mut alice, capture, "rejected", "cat photo"), 400, "one of the reasons");
    assert_eq!(decide(&mut alice, capture, "rejected", "unreadable"), 303);
    assert_eq!(decide(&mut alice, capture, "accepted", ""), 303);
    let page = alice.get(&format!("/review/captures/{capture}"));
    assert!(page.body.contains("id=\"capture-state\">accepted"));
    // Rejected or not, the capture stays listed for coordinators.
    let queue = alice.get("/review?state=accepted");
    assert_eq!(capture_links(&queue.body), vec![capture.clone()]);
    let mut root = Browser::login(url, "root");
    let csv = root.get("/review/audit.csv").body;
    let decisions: Vec<&str> = csv.lines().filter(|l| l.contains("\"decision\"")).collect();
    assert_eq!(decisions.len(), 2, "{csv}");
    assert!(decisions[0].contains("Alice Abenova") && decisions[0].contains("unreadable"));
    assert!(
        decisions[1].contains("\"\"kind\"\":\"\"rejected\"\"")
            && decisions[1].contains("\"\"kind\"\":\"\"accepted\"\""),
        "before and after: {}",
        decisions[1]
    );
    assert!(csv.contains("\"login\""));
    // The storage refuses to rewrite history.
    let db = rusqlite::Connection::open(f.server.data_dir.join("hattama-server.sqlite3")).unwrap();
    for sql in ["UPDATE audit SET action = 'x'", "DELETE FROM audit", "DELETE FROM decisions"] {
        assert!(db.execute(sql, []).is_err(), "{sql} must fail");
    }
}

#[test]
fn the_queue_filters_groups_and_flags() {
    let server = TestServer::start_with(&election(8), &[]);
    add_user(&server.data_dir, "alice", "Alice", "coordinator", &[]);
    let mut d1 = enrolled_device(&server, 21, &["p0001", "p0002", "p0005"]);
    let mut d2 = enrolled_device(&server, 22, &["p0001", "p0003"]);
    let transcription = |v: u64| Some(BTreeMap::from([("1".to_owned(), v), ("2".to_owned(), 5)]));
    // d1: seq 1 (p0001), seq 2 never arrives, seq 3 (p0002) → a chain gap.
    let a = upload(&server, &mut d1, "p0001", &photo(31), |m| m.transcription = transcription(100));
    d1.seq += 1;
    d1.prev = hattama_core::evidence::Sha256Hash([9; 32]);
    let gap = upload(&server, &mut d1, "p0002", &photo(32), |_| {});
    // The same photo bytes for p0005 and (by d2) p0003 → duplicate photo.
    let dup1 = upload(&server, &mut d1, "p0005", &photo(33), |_| {});
    // d2 disagrees with d1 about p0001.
    let b = upload(&server, &mut d2, "p0001", &photo(34), |m| m.transcription = transcription(101));
    let dup2 = upload(&server, &mut d2, "p0003", &photo(33), |m| {
        // … and was taken two days after the count.
        m.captured_at_ms = 1_795_000_000_000 + 2 * 86_400_000;
    });

    let mut alice = Browser::login(&server.url, "alice");
    let ids = |b: &mut Browser, q: &str| {
        let mut v = capture_links(&b.get(&format!("/review?{q}")).body);
        v.sort();
        v
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(ids(&mut alice, "flag=chain_gap"), vec![gap.clone()]);
    assert_eq!(ids(&mut alice, "flag=duplicate_photo"), sorted(vec![dup1.clone(), dup2.clone()]));
    assert_eq!(ids(&mut alice, "flag=devices_disagree"), sorted(vec![a.clone(), b.clone()]));
    assert_eq!(ids(&mut alice, "flag=time_far"), vec![dup2.clone()]);
    assert_eq!(ids(&mut alice, "region=Astana").len(), 3, "p0001 twice and p0005");
    assert_eq!(ids(&mut alice, "precinct=2"), vec![gap.clone()], "by number");
    assert_eq!(ids(&mut alice, "precinct=p0002"), vec![gap.clone()], "by id");
    assert_eq!(ids(&mut alice, "state=new").len(), 5);
    // The two pages of p0001 are one group, and next/previous follow the queue's order.
    let queue = alice.get("/review").body;
    assert_eq!(queue.matches("data-precinct=\"p0001\"").count(), 1);
    assert!(queue.contains("5 captures"));
    let order = capture_links(&queue);
    let page = alice.get(&format!("/review/captures/{}?state=new", order[1]));
    assert!(
        page.body.contains(&format!("/review/captures/{}?election=e2e&#38;state=new", order[0]))
    );
    assert!(
        page.body.contains(&format!("/review/captures/{}?election=e2e&#38;state=new", order[2]))
    );
    // The flags show on the capture page too.
    assert!(alice.get(&format!("/review/captures/{gap}")).body.contains("device chain gap"));
    // Filters combine.
    assert_eq!(ids(&mut alice, "flag=time_far&region=Karaganda"), vec![dup2]);
    assert!(ids(&mut alice, "flag=time_far&region=Astana").is_empty());
}

#[test]
fn user_commands_manage_accounts_without_passwords_in_arguments() {
    let server = TestServer::start_with(&election(2), &[]);
    let dir = &server.data_dir;
    // A generated password is printed once.
    let run = admin(dir, &["user", "add", "gen", "--name", "Generated", "--role", "supervisor"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let password =
        run.stdout.lines().find_map(|l| l.strip_prefix("password: ")).unwrap().to_owned();
    let mut b = Browser::new(&server.url);
    assert_eq!(b.try_login("gen", &password).status, 303);
    // Refused: a taken name, a bad role, regions for a non-coordinator, a bad name.
    for args in [
        &["user", "add", "gen", "--name", "X", "--role", "admin"][..],
        &["user", "add", "x", "--name", "X", "--role", "king"],
        &["user", "add", "x", "--name", "X", "--role", "admin", "--region", "Almaty"],
        &["user", "add", "Bad Name", "--name", "X", "--role", "admin"],
    ] {
        assert_ne!(admin(dir, args).code, Some(0), "{args:?}");
    }
    // Disable: the session ends and no new one starts.
    let run = admin(dir, &["user", "disable", "gen"]);
    assert_eq!(run.code, Some(0));
    assert_eq!(b.get("/review").status, 303);
    assert_eq!(Browser::new(&server.url).try_login("gen", &password).status, 401);
    // Reset: a new password from standard input, and the account works again.
    let mut child = std::process::Command::new(hattama_tests::bin("hattama-server"))
        .args(["--data-dir", dir.to_str().unwrap(), "user", "reset", "gen", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"a brand new long password\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("a brand new"), "not echoed");
    assert_eq!(Browser::new(&server.url).try_login("gen", &password).status, 401);
    assert_eq!(Browser::new(&server.url).try_login("gen", "a brand new long password").status, 303);
    let list = admin(dir, &["user", "list", "--json"]).ok_json();
    assert_eq!(list[0]["username"], "gen");
    assert_eq!(list[0]["disabled"], false);
    // Too short a password is refused.
    let mut child = std::process::Command::new(hattama_tests::bin("hattama-server"))
        .args(["--data-dir", dir.to_str().unwrap(), "user", "reset", "gen", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    assert!(!child.wait_with_output().unwrap().status.success());
}

#[test]
fn review_in_a_real_browser() {
    let f = fixture();
    let config = serde_json::json!({
        "password": PASSWORD,
        "p1": f.p1,
        "p2": f.p2,
    });
    browser::run_script("review", &f.server.url, &[&config.to_string()]);
}

#[test]
fn the_public_gallery_shows_what_review_decided() {
    let f = fixture();
    let url = &f.server.url;
    let api = format!("{url}/api/v1/elections/e2e/precincts/p0002");
    let get = || -> serde_json::Value { reqwest::blocking::get(&api).unwrap().json().unwrap() };
    assert!(get()["transcription"].is_null(), "nothing transcribed yet");
    let mut alice = Browser::login(url, "alice");
    let mut bob = Browser::login(url, "bob");
    assert_eq!(decide(&mut alice, &f.p2, "accepted", ""), 303);
    assert_eq!(post_entry(&mut alice, &f.p2, &good_protocol(), ""), 303);
    assert_eq!(post_entry(&mut bob, &f.p2, &good_protocol(), ""), 303);
    // The gallery looks at storage again within a quarter of a second.
    let mut seen = serde_json::Value::Null;
    for _ in 0..40 {
        seen = get();
        if seen["transcription"]["status"] == "verified" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(seen["transcription"]["status"], "verified", "{seen}");
    assert_eq!(seen["transcription"]["values"]["7.1"], 400);
    assert_eq!(seen["captures"][0]["capture"]["state"], "accepted", "{seen}");
}

/// The count shown on a view's tab of a queue page.
fn view_count(body: &str, view: &str) -> u64 {
    let at = body.find(&format!("id=\"{view}\"")).unwrap_or_else(|| panic!("no tab {view}"));
    let rest = &body[at..];
    let start = rest.find("<span class=\"count\">").unwrap() + 20;
    rest[start..].split('<').next().unwrap().parse().unwrap()
}

#[test]
fn a_corrected_entry_saves_without_a_reason() {
    let f = fixture();
    let url = &f.server.url;
    let capture = &f.p2;
    let mut alice = Browser::login(url, "alice");
    let mut broken = good_protocol();
    broken[1].1 = 950; // received 950 != issued 700 + cancelled 200
    let page = post_entry_page(&mut alice, capture, &values(&broken), "");
    assert_eq!(page.status, 422);
    // The reason box is offered, never required by the browser: the server decides.
    let textarea = page.body.split("<textarea id=\"entry-reason\"").nth(1).unwrap();
    let textarea = textarea.split('>').next().unwrap();
    assert!(!textarea.contains("required"), "the reason is not a required field: {textarea}");
    // The fields of the broken rule (received = issued + cancelled) are the ones marked, the
    // first of them has the focus; the others are not.
    for line in ["2", "3", "4"] {
        let input = page.body.split(&format!("id=\"line-{line}\"")).nth(1).unwrap();
        let input = input.split('>').next().unwrap();
        assert!(input.contains("aria-invalid=\"true\""), "line {line}: {input}");
        assert_eq!(input.contains("autofocus"), line == "2", "line {line}: {input}");
    }
    for line in ["1", "5", "7.1"] {
        let input = page.body.split(&format!("id=\"line-{line}\"")).nth(1).unwrap();
        assert!(!input.split('>').next().unwrap().contains("aria-invalid"), "line {line}");
    }
    // Still broken without a reason: still refused.
    let mut still = good_protocol();
    still[2].1 = 690;
    assert_eq!(post_entry(&mut alice, capture, &still, ""), 422);
    // Corrected: saved without a reason; a reason left in the box is not kept (it would
    // become public as the protocol's inconsistency note).
    let page = post_entry_page(&mut alice, capture, &values(&good_protocol()), "left over");
    assert_eq!(page.status, 303, "{}", page.body);
    // A supervisor reads the audit trail: an admin, who may still make the second entry, is
    // shown no numbers of the first (blindness, docs/review.md).
    let mut sam = Browser::login(url, "sam");
    let audit: serde_json::Value =
        serde_json::from_str(&sam.get("/review/audit.json").body).unwrap();
    let entries: Vec<&serde_json::Value> =
        audit.as_array().unwrap().iter().filter(|e| e["action"] == "entry").collect();
    assert_eq!(entries.len(), 1);
    let after: serde_json::Value =
        serde_json::from_str(entries[0]["after"].as_str().unwrap()).unwrap();
    assert_eq!(after["reason"], serde_json::Value::Null, "{after}");
    assert_eq!(after["entry"]["2"], 900);
}

#[test]
fn a_decision_or_entry_on_a_stale_page_is_refused() {
    let f = fixture();
    let url = &f.server.url;
    let capture = &f.p2;
    let mut alice = Browser::login(url, "alice");
    // Alice's clock is five hours east of UTC.
    alice.cookies.push(("tz".into(), "300".into()));
    let mut bob = Browser::login(url, "bob");
    let (alice_saw, _) = seen(&mut alice, capture);
    assert_eq!(alice_saw, "0", "no decision yet");
    assert_eq!(decide(&mut bob, capture, "rejected", "unreadable"), 303);
    // Alice decides on her stale page: refused, with what Bob decided and when.
    let page = decide_seen(&mut alice, capture, "accepted", "", &alice_saw);
    assert_eq!(page.status, 409);
    assert!(page.body.contains("Already decided by Bob Bekov at "), "{}", page.body);
    assert!(page.body.contains(": rejected — unreadable."), "{}", page.body);
    assert!(page.body.contains("Times in UTC+05:00."));
    assert!(page.body.contains("id=\"capture-state\">rejected"), "the current state is shown");
    // Nothing was overwritten: one decision; a decision on the fresh page goes through.
    let mut root = Browser::login(url, "root");
    let decisions =
        |root: &mut Browser| root.get("/review/audit.csv").body.matches("\"decision\"").count();
    assert_eq!(decisions(&mut root), 1);
    let fresh = hidden(&page.body, "", "seen").unwrap();
    assert_ne!(fresh, "0");
    assert_eq!(decide_seen(&mut alice, capture, "accepted", "", &fresh).status, 303);
    assert_eq!(decisions(&mut root), 2);
    // A forged or missing version is no version.
    assert_eq!(decide_seen(&mut alice, capture, "accepted", "", "x").status, 400);

    // Entries: Carol opens the blind form; meanwhile Alice and Bob enter differently.
    let mut carol = Browser::login(url, "carol");
    let (_, carol_saw) = seen(&mut carol, capture);
    assert_eq!(carol_saw, "pending");
    assert_eq!(post_entry(&mut alice, capture, &good_protocol(), ""), 303);
    let mut other = good_protocol();
    other[6].1 = 410;
    other[9].1 = 20;
    assert_eq!(post_entry(&mut bob, capture, &other, ""), 303);
    // Carol's blind entry does not silently become the resolution of a dispute she never saw.
    let csrf = carol.csrf();
    let mut form = values(&good_protocol());
    form.extend([("csrf".into(), csrf), ("seen".into(), carol_saw)]);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let page = carol.post(&format!("/review/captures/{capture}/entry"), &form);
    assert_eq!(page.status, 409);
    assert!(
        page.body.contains("Changed meanwhile: Bob Bekov entered this protocol at"),
        "{}",
        page.body
    );
    assert!(page.body.contains("entries differ: needs a third person"));
    assert!(page.body.contains("id=\"dispute\""), "she now gets the resolution form");
    // Two third persons resolve at once: the second is refused, not a silent overwrite.
    let (_, root_saw) = seen(&mut root, capture);
    assert_eq!(root_saw, "disputed");
    assert_eq!(post_entry(&mut carol, capture, &good_protocol(), ""), 303);
    let csrf = root.csrf();
    let mut form = values(&other);
    form.extend([("csrf".into(), csrf), ("seen".into(), root_saw)]);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let page = root.post(&format!("/review/captures/{capture}/entry"), &form);
    assert_eq!(page.status, 409);
    assert!(page.body.contains("Changed meanwhile: Carol Sarsen entered this protocol at"));
    let api = format!("{url}/api/v1/elections/e2e/precincts/p0002");
    let t: serde_json::Value = reqwest::blocking::get(&api).unwrap().json().unwrap();
    assert_eq!(t["transcription"]["values"]["7.1"], 400, "Carol's resolution stands");
}

#[test]
fn queue_views_by_transcription_state_with_counts() {
    let f = fixture();
    let url = &f.server.url;
    let mut alice = Browser::login(url, "alice");
    let mut bob = Browser::login(url, "bob");
    let mut carol = Browser::login(url, "carol");
    let mut root = Browser::login(url, "root");
    // p0001 (two pages): Bob and Carol differ → disputed.
    let mut other = good_protocol();
    other[6].1 = 410;
    other[9].1 = 20;
    assert_eq!(post_entry(&mut bob, &f.p1[0], &good_protocol(), ""), 303);
    assert_eq!(post_entry(&mut carol, &f.p1[1], &other, ""), 303);
    // p0002: Alice entered → pending. p0004: Alice entered a protocol that breaks a hard rule,
    // with the reason.
    assert_eq!(post_entry(&mut alice, &f.p2, &good_protocol(), ""), 303);
    let mut broken = good_protocol();
    broken[1].1 = 950;
    assert_eq!(post_entry(&mut alice, &f.p4, &broken, "The protocol says 950"), 303);

    // p0003: only a report that no protocol was posted: nothing to enter.
    let mut d3 = enrolled_device(&f.server, 30, &["p0003"]);
    upload(&f.server, &mut d3, "p0003", &photo(40), |m| {
        m.kind = hattama_core::evidence::EvidenceKind::NotPosted;
    });

    let ids = |b: &mut Browser, q: &str| {
        let mut v = capture_links(&b.get(&format!("/review?{q}")).body);
        v.sort();
        v
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    // Needs my entry: what this user has not entered and is not verified, disputed, rejected or
    // a report of no protocol.
    assert!(ids(&mut alice, "view=mine").is_empty());
    assert_eq!(ids(&mut bob, "view=mine"), sorted(vec![f.p2.clone(), f.p4.clone()]));
    assert_eq!(ids(&mut root, "view=mine"), sorted(vec![f.p2.clone(), f.p4.clone()]));
    // Disputed, needs a third person: for those who did not enter it.
    assert_eq!(ids(&mut alice, "view=disputed"), sorted(f.p1.clone()));
    assert!(ids(&mut bob, "view=disputed").is_empty());
    // An empty view says so and links the next view with work.
    let empty = bob.get("/review?view=disputed").body;
    assert!(
        empty.contains("id=\"queue-empty\">Nothing in “Disputed: needs a third person” now."),
        "{empty}"
    );
    assert!(
        empty.contains("id=\"queue-next-view\">Next with work: Needs my entry (2)</a>"),
        "{empty}"
    );
    assert!(empty.contains("view=mine\" id=\"queue-next-view\""), "the link goes there");
    // A filter that names nothing is ignored, and the page says so.
    let unknown = bob.get("/review?state=pending&view=nonsense").body;
    assert!(unknown.contains("Unknown filter ignored: state=pending, view=nonsense."), "{unknown}");
    assert_eq!(ids(&mut bob, "state=pending").len(), 5, "the whole queue, without the filter");
    // Inconsistent protocol: an entry recorded why the protocol breaks a hard rule.
    assert_eq!(ids(&mut bob, "view=inconsistent"), vec![f.p4.clone()]);
    // The counts on the tabs, under the other filters too.
    let queue = bob.get("/review").body;
    assert_eq!(
        ["view-all", "view-mine", "view-disputed", "view-inconsistent"]
            .map(|v| view_count(&queue, v)),
        [5, 2, 0, 1]
    );
    let queue = alice.get("/review?region=Astana").body;
    assert_eq!(
        ["view-all", "view-mine", "view-disputed", "view-inconsistent"]
            .map(|v| view_count(&queue, v)),
        [2, 0, 2, 0]
    );
    assert!(queue.contains("aria-current=\"page\">All"), "the current view is marked");
    // A rejected capture needs nobody's entry; an entry moves a precinct out of the view at
    // once (the counts are not stale).
    assert_eq!(decide(&mut root, &f.p2, "rejected", "unreadable"), 303);
    assert_eq!(ids(&mut bob, "view=mine"), vec![f.p4.clone()]);
    assert_eq!(post_entry(&mut bob, &f.p4, &broken, "The protocol says 950"), 303);
    let queue = bob.get("/review?view=mine").body;
    assert_eq!(view_count(&queue, "view-mine"), 0);
    assert!(queue.contains("aria-current=\"page\">Needs my entry"));
    assert_eq!(view_count(&queue, "view-inconsistent"), 1, "verified, still inconsistent");
    // The view is kept when filters change and when going to a capture and back.
    assert!(queue.contains("<input type=\"hidden\" name=\"view\" value=\"mine\">"));
    let page = alice.get(&format!("/review/captures/{}?view=disputed", f.p1[0]));
    assert!(
        page.body.contains(&format!("/review/captures/{}?election=e2e&#38;view=disputed", f.p1[1]))
    );
}

#[test]
fn after_a_decision_or_entry_the_next_in_the_view_opens() {
    let f = fixture();
    let url = &f.server.url;
    let mut alice = Browser::login(url, "alice");
    // Queue order: Almaty (p0004), Astana (p0001, two pages), Shymkent (p0002).
    let order = capture_links(&alice.get("/review?view=mine").body);
    assert_eq!(order, [f.p4.clone(), f.p1[0].clone(), f.p1[1].clone(), f.p2.clone()]);
    // A decision: on to the next of the view, with a confirmation line and a way back.
    let (seen0, _) = seen(&mut alice, &f.p4);
    let csrf = alice.csrf();
    let page = alice.post(
        &format!("/review/captures/{}/decision", f.p4),
        &[("csrf", &csrf), ("kind", "accepted"), ("seen", &seen0), ("back", "view=mine")],
    );
    assert_eq!(page.status, 303);
    assert_eq!(
        page.location,
        format!("/review/captures/{}?view=mine&done=accepted&after={}", f.p1[0], f.p4)
    );
    let next = alice.get(&page.location);
    assert!(next.body.contains("Accepted: precinct 4, page 1/1."), "{}", next.body);
    assert!(next.body.contains(&format!(
        "href=\"/review/captures/{}?election=e2e&#38;view=mine\" data-key=\"b\"",
        f.p4
    )));
    // An entry of p0001 takes its second page out of the view too: the next is p0002.
    let csrf = alice.csrf();
    let mut form = values(&good_protocol());
    form.extend([
        ("csrf".to_owned(), csrf),
        ("seen".to_owned(), "pending".to_owned()),
        ("back".to_owned(), "view=mine".to_owned()),
    ]);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let page = alice.post(&format!("/review/captures/{}/entry", f.p1[0]), &form);
    assert_eq!(
        page.location,
        format!("/review/captures/{}?view=mine&done=entered&after={}", f.p2, f.p1[0])
    );
    let next = alice.get(&page.location);
    assert!(next.body.contains("Entry saved: precinct 1, page 1/2. Waiting for a second entry."));
    // The last of the view: back to the queue, which says so.
    let (seen2, _) = seen(&mut alice, &f.p2);
    let csrf = alice.csrf();
    let page = alice.post(
        &format!("/review/captures/{}/decision", f.p2),
        &[("csrf", &csrf), ("kind", "flagged"), ("seen", &seen2), ("back", "view=mine")],
    );
    assert_eq!(page.location, format!("/review?view=mine&done=flagged&after={}", f.p2));
    let queue = alice.get(&page.location).body;
    assert!(queue.contains("Flagged for a supervisor: precinct 2, page 1/1."), "{queue}");
    assert!(queue.contains("That was the last one in this view."));
}

#[test]
fn the_third_person_picks_per_line() {
    let server = TestServer::start_with(&election(4), &[]);
    for (u, name) in [("alice", "Alice Abenova"), ("bob", "Bob Bekov"), ("carol", "Carol Sarsen")] {
        add_user(&server.data_dir, u, name, "coordinator", &[]);
    }
    let mut d = enrolled_device(&server, 9, &["p0001"]);
    // The observer's own transcription says 7.1 = 405.
    let observer: BTreeMap<String, u64> = good_protocol()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), if k == "7.1" { 405 } else { v }))
        .collect();
    let capture = upload(&server, &mut d, "p0001", &photo(5), |m| {
        m.transcription = Some(observer.clone());
    });
    let url = &server.url;
    let mut alice = Browser::login(url, "alice");
    let mut bob = Browser::login(url, "bob");
    let mut carol = Browser::login(url, "carol");
    assert_eq!(post_entry(&mut alice, &capture, &good_protocol(), ""), 303);
    let mut other = good_protocol();
    other[6].1 = 410; // 7.1
    other[9].1 = 20; // 8
    assert_eq!(post_entry(&mut bob, &capture, &other, ""), 303);

    // Carol sees both entries per line: the differing lines offer Alice's and Bob's value (and
    // the observer's where it is a third one), the agreed lines come picked.
    let page = carol.get(&format!("/review/captures/{capture}"));
    assert_eq!(page.body.matches("class=\"pick differs\"").count(), 2);
    let line = |body: &str, id: &str| {
        let at = body.find(&format!("id=\"pick-{id}\"")).unwrap();
        body[at..].split("</fieldset>").next().unwrap().to_owned()
    };
    let l71 = line(&page.body, "7.1");
    assert!(l71.contains("Alice Abenova: <b>400</b>") && l71.contains("Bob Bekov: <b>410</b>"));
    assert!(l71.contains("Observer: <b>405</b>"), "{l71}");
    assert!(!l71.contains("checked"), "a differing line is not picked for her");
    let l8 = line(&page.body, "8");
    assert!(!l8.contains("Observer"), "the observer agrees with one of them: no third choice");
    let l1 = line(&page.body, "1");
    assert!(
        l1.contains("value=\"first\" required checked") && l1.contains("Both entries: <b>1000</b>")
    );

    let agreed: Vec<(String, String)> = good_protocol()
        .iter()
        .filter(|(k, _)| !["7.1", "8"].contains(k))
        .map(|(k, _)| (format!("pick:{k}"), "first".to_owned()))
        .collect();
    let resolve = |carol: &mut Browser, picks: &[(&str, &str)], typed: &[(&str, &str)]| {
        let mut form = agreed.clone();
        form.extend(picks.iter().map(|(k, v)| (format!("pick:{k}"), (*v).to_owned())));
        form.extend(typed.iter().map(|(k, v)| (format!("line:{k}"), (*v).to_owned())));
        post_entry_page(carol, &capture, &form, "")
    };
    // "Neither" without a number: refused, the choices kept.
    let page = resolve(&mut carol, &[("7.1", "second"), ("8", "typed")], &[("8", "")]);
    assert_eq!(page.status, 422);
    assert!(page.body.contains("Pick a value for every line"));
    assert!(line(&page.body, "7.1").contains("value=\"second\" checked"));
    // Picks that break a hard rule (in boxes 690 ≠ 400 + 200 + 50 + 20 + 10): refused, the
    // lines of the rule marked.
    let page = resolve(&mut carol, &[("7.1", "first"), ("8", "second")], &[]);
    assert_eq!(page.status, 422);
    assert!(page.body.contains("class=\"pick differs invalid\" id=\"pick-7.1\""));
    // Bob's 7.1, and 8 typed because both are wrong (the observer's 405 would not add up).
    let page =
        resolve(&mut carol, &[("7.1", "second"), ("8", "typed")], &[("8", "20"), ("7.1", "999")]);
    assert_eq!(page.status, 303, "{}", page.body);
    let t: serde_json::Value =
        reqwest::blocking::get(format!("{url}/api/v1/elections/e2e/precincts/p0001"))
            .unwrap()
            .json()
            .unwrap();
    assert_eq!(t["transcription"]["status"], "verified");
    assert_eq!(t["transcription"]["values"]["7.1"], 410, "Bob's value, not the stray typed 999");
    assert_eq!(t["transcription"]["values"]["8"], 20);
    assert_eq!(t["transcription"]["values"]["1"], 1000);
}

#[test]
fn the_review_by_keyboard_alone_in_a_real_browser() {
    let f = fixture();
    // p0004 is disputed before Alice comes: Bob and Carol differ on lines 7.1 and 8.
    let mut bob = Browser::login(&f.server.url, "bob");
    let mut carol = Browser::login(&f.server.url, "carol");
    assert_eq!(post_entry(&mut bob, &f.p4, &good_protocol(), ""), 303);
    let mut other = good_protocol();
    other[6].1 = 410;
    other[9].1 = 20;
    assert_eq!(post_entry(&mut carol, &f.p4, &other, ""), 303);
    let config = serde_json::json!({
        "password": PASSWORD,
        "p1": f.p1,
        "p2": f.p2,
        "p4": f.p4,
    });
    browser::run_script("review_keyboard", &f.server.url, &[&config.to_string()]);
}
