//! [Scale-out] Three real `hattama-server` instances on one PostgreSQL schema and one Garage
//! prefix (`scripts/lib/postgres.sh`, `scripts/lib/garage.sh`), each with a data directory of
//! its own holding the same keys, behind a real nginx balancing round robin
//! (`tests/nginx/instances.conf.in`). Fifty devices (the real core) sync through nginx, so one
//! tus upload's requests go to several instances; the instance that integrates the log (the
//! holder of the log lease, as its `/metrics` says) is SIGKILLed ten times during uploads and
//! started again, and another takes the lease over. At the end: every capture a device holds a
//! receipt for is stored once and in the log, no device raised a log alarm, every tus upload
//! finished (nothing unfinished is left; many resumed on another instance), every checkpoint
//! served during the run (by `GET /log/checkpoint` through nginx, in receipts, kept by devices)
//! is a prefix of the final tree, and `hattama audit --photos` of the final log is clean.
//! Random choices come from a printed seed (`HATTAMA_TEST_SEED` replays one). Without
//! PostgreSQL or Garage the test says so and passes, except on CI (`CI=true`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hattama_core::log::{self as tlog, Checkpoint, LogKey, TlogProof};
use hattama_core::store::CaptureState;
use hattama_core::sync::SyncConfig;
use hattama_core::{Client, ClientConfig};
use hattama_tests::backend::Backend;
use hattama_tests::nginx::Nginx;
use hattama_tests::server::TestServer;
use hattama_tests::{Run, bin, posted_request, seeded_rng, sync_to_completion, textured_jpeg};
use rand::Rng;

const INSTANCES: usize = 3;
const DEVICES: usize = 50;
const KILLS: usize = 10;
const PRECINCTS: [&str; 5] = ["p0001", "p0002", "p0003", "p0004", "p0005"];
const METRICS_TOKEN: &str = "instances-test-metrics-token";

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// An admin command of `hattama-server` on the shared storage.
fn admin(data_dir: &Path, env: &[(String, String)], args: &[&str]) -> Run {
    std::process::Command::new(bin("hattama-server"))
        .envs(pairs(env))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap()
        .into()
}

/// A device: short back-offs, and PATCH requests of 32 KiB, so that a large photo takes several
/// requests, which nginx sends to different instances.
fn open_client(dir: &Path) -> Client {
    let sync = SyncConfig {
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(300),
        max_retries: 60,
        request_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(2),
        chunk_bytes: 32 * 1024,
        ..SyncConfig::default()
    };
    Client::open(dir, &hattama_tests::test_key(), ClientConfig { sync, ..ClientConfig::default() })
        .unwrap()
}

/// Device `device`'s photo of round `round`: large (a tus upload of several requests) and small
/// (stored in one request) in turn.
fn capture(client: &Client, device: usize, round: usize) {
    let side = if (device + round).is_multiple_of(2) { 640 } else { 120 };
    let photo = textured_jpeg(side, side * 3 / 4, (device * 1000 + round + 1) as u32, 90);
    client.capture(&photo, &posted_request(PRECINCTS[device % PRECINCTS.len()])).unwrap();
}

fn receipted(client: &Client) -> usize {
    client.list().unwrap().iter().filter(|r| r.state == CaptureState::Receipted).count()
}

fn receipted_total(devices: &[Arc<Client>]) -> usize {
    devices.iter().map(|c| receipted(c)).sum()
}

/// Which running instances say (`hattama_log_integrating` on their `/metrics`) that they
/// integrate the log.
fn integrating(http: &reqwest::blocking::Client, servers: &[Option<TestServer>]) -> Vec<usize> {
    let mut found = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let Some(server) = server else { continue };
        let Ok(answer) =
            http.get(format!("{}/metrics", server.url)).bearer_auth(METRICS_TOKEN).send()
        else {
            continue;
        };
        let text = answer.text().unwrap_or_default();
        if text.lines().any(|l| l == "hattama_log_integrating 1") {
            found.push(i);
        }
    }
    found
}

/// The one instance that integrates, once there is one (never two at once).
fn integrator(http: &reqwest::blocking::Client, servers: &[Option<TestServer>]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = integrating(http, servers);
        assert!(found.len() <= 1, "two instances integrate at once: {found:?}");
        if let [one] = found[..] {
            return one;
        }
        assert!(Instant::now() < deadline, "no instance took the log lease");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `GET /log/checkpoint` through nginx until stopped, keeping every distinct note.
fn watch_checkpoints(
    url: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<HashSet<Vec<u8>>>>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let http = reqwest::blocking::Client::new();
        let mut reads = 0;
        while !stop.load(Ordering::SeqCst) {
            if let Ok(answer) = http.get(format!("{url}/log/checkpoint")).send()
                && answer.status() == 200
                && let Ok(note) = answer.bytes()
            {
                reads += 1;
                seen.lock().unwrap().insert(note.to_vec());
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        reads
    })
}

/// Checks that the checkpoint `note` is the tree `last` or a prefix of it, with a consistency
/// proof asked through nginx.
fn check_prefix(
    http: &reqwest::blocking::Client,
    url: &str,
    key: &LogKey,
    note: &[u8],
    last: &Checkpoint,
) {
    let c = tlog::verify_checkpoint(note, key).unwrap();
    assert!(
        c.size <= last.size,
        "a checkpoint of {} entries, the final one has {}",
        c.size,
        last.size
    );
    if c.size == last.size {
        assert_eq!(c.root, last.root, "two trees of {} entries", c.size);
        return;
    }
    let answer: serde_json::Value = http
        .get(format!("{url}/api/v1/log/consistency?from={}", c.size))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let newest =
        tlog::verify_checkpoint(answer["checkpoint"].as_str().unwrap().as_bytes(), key).unwrap();
    assert_eq!((newest.size, newest.root), (last.size, last.root), "the log moved on");
    let proof: Vec<_> = answer["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| tlog::hash_from_base64(h.as_str().unwrap()).unwrap())
        .collect();
    tlog::verify_consistency(c.size, &c.root, last.size, &last.root, &proof)
        .unwrap_or_else(|e| panic!("the checkpoint of {} entries is not a prefix: {e}", c.size));
}

/// PATCH requests per tus upload, from nginx's access log: the instances that answered them.
fn patch_upstreams(log: &str) -> HashMap<String, HashSet<String>> {
    let mut uploads: HashMap<String, HashSet<String>> = HashMap::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix("PATCH /files/") else { continue };
        let (id, rest) = rest.split_once(' ').unwrap();
        let upstreams = rest.split_once('"').unwrap().1.trim_end_matches('"');
        let entry = uploads.entry(id.to_owned()).or_default();
        for upstream in upstreams.split([',', ':']).map(str::trim) {
            // `host:port` split at ':' leaves hosts and ports; the port names the instance.
            if upstream.parse::<u16>().is_ok() {
                entry.insert(upstream.to_owned());
            }
        }
    }
    uploads
}

#[test]
fn three_instances_behind_nginx_lose_nothing_when_the_integrator_is_killed_ten_times() {
    let Some(backend) = Backend::postgres_s3() else { return };
    let (_, mut rng) = seeded_rng();

    // One storage (the schema and bucket prefix named after the first data directory), three
    // data directories (each server's lock) with the same keys.
    let root = tempfile::tempdir().unwrap();
    let data: Vec<PathBuf> = (0..INSTANCES).map(|i| root.path().join(format!("i{i}"))).collect();
    for d in &data {
        std::fs::create_dir(d).unwrap();
    }
    let mut env = backend.env(&data[0]);
    env.push(("HATTAMA__METRICS__TOKEN".into(), METRICS_TOKEN.into()));
    let election = data[0].join("election.json");
    let definition = hattama_tests::fixtures::election("e2e", PRECINCTS.len());
    std::fs::write(&election, serde_json::to_vec(&definition).unwrap()).unwrap();
    let imported = admin(&data[0], &env, &["election", "import", election.to_str().unwrap()]);
    assert_eq!(imported.code, Some(0), "{imported:?}");
    let mut servers: Vec<Option<TestServer>> = Vec::new();
    servers.push(Some(TestServer::start_on_with(&data[0], "127.0.0.1:0", &pairs(&env))));
    for d in &data[1..] {
        hattama_tests::copy_dir(&data[0].join("keys"), &d.join("keys"));
        servers.push(Some(TestServer::start_on_with(d, "127.0.0.1:0", &pairs(&env))));
    }
    let addrs: Vec<_> = servers.iter().map(|s| s.as_ref().unwrap().addr).collect();
    let nginx = Nginx::start(&addrs);
    let url = nginx.url.clone();
    let http = reqwest::blocking::Client::new();
    let first = integrator(&http, &servers);
    println!("instances on {addrs:?} behind nginx on {url}; instance {first} integrates");

    // Fifty devices enrolled through nginx.
    let mut args = vec!["invite", "create", "--election", "e2e", "--json", "--count", "50"];
    for p in PRECINCTS {
        args.extend(["--precinct", p]);
    }
    let codes = admin(&data[0], &env, &args).ok_json();
    let phones: Vec<_> = (0..DEVICES).map(|_| tempfile::tempdir().unwrap()).collect();
    let devices: Vec<Arc<Client>> = phones
        .iter()
        .zip(codes.as_array().unwrap())
        .map(|(dir, code)| {
            let client = open_client(dir.path());
            client.enroll(&url, code["code"].as_str().unwrap()).unwrap();
            Arc::new(client)
        })
        .collect();
    let key_json: serde_json::Value =
        http.get(format!("{url}/api/v1/log/key")).send().unwrap().json().unwrap();
    let vkey = key_json["vkey"].as_str().unwrap().to_owned();
    let key = LogKey::from_vkey(&vkey).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(Mutex::new(HashSet::new()));
    let watcher = watch_checkpoints(url.clone(), stop.clone(), served.clone());

    // Each round every device captures a photo and syncs; after a random moment, while uploads
    // are under way, the instance that integrates is SIGKILLed (its uploads under way go on elsewhere), another takes the lease, and the killed
    // one starts again.
    let mut takeovers = Vec::new();
    for round in 0..KILLS {
        std::thread::scope(|s| {
            for (i, client) in devices.iter().enumerate() {
                s.spawn(move || capture(client, i, round));
            }
        });
        let total = (round + 1) * DEVICES;
        // Asked before the syncs start: the lease moves only when its holder dies.
        let victim = integrator(&http, &servers);
        let logged = |sql: &str| -> u64 { backend.query(&data[0], sql).trim().parse().unwrap() };
        let before = logged("SELECT size FROM log_published");
        let syncs: Vec<_> = devices
            .iter()
            .map(|client| {
                let client = client.clone();
                std::thread::spawn(move || sync_to_completion(&client, 40))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
        // The kill comes while uploads are under way: sessions not yet completed, in the
        // database all instances share.
        let open = loop {
            let open = logged("SELECT count(*) FROM uploads");
            if open > 0 {
                break open;
            }
            assert!(
                !syncs.iter().all(|s| s.is_finished()),
                "round {round}: the uploads finished before the kill"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let grown = logged("SELECT size FROM log_published") - before;
        let mut killed = servers[victim].take().unwrap();
        killed.kill();
        let killed_at = Instant::now();
        let held = receipted_total(&devices);
        let next = integrator(&http, &servers);
        takeovers.push(killed_at.elapsed());
        println!(
            "round {round}: instance {victim} killed with {open} uploads under way, the log {grown} \
             entries longer than at the round's start ({held} of {total} captures receipted \
             after it); instance {next} took over in {} ms",
            killed_at.elapsed().as_millis()
        );
        servers[victim] = Some(TestServer::start_on_with(
            &data[victim],
            &addrs[victim].to_string(),
            &pairs(&env),
        ));
        for sync in syncs {
            sync.join().unwrap();
        }
    }
    stop.store(true, Ordering::SeqCst);
    let reads = watcher.join().unwrap();

    // Every device: all receipted, no alarm.
    let total = KILLS * DEVICES;
    let mut held_ids = HashSet::new();
    let mut kept_notes = HashSet::new();
    for (i, client) in devices.iter().enumerate() {
        let status = client.status().unwrap();
        assert!(status.log_alarm.is_none(), "device {i}: {:?}", status.log_alarm);
        kept_notes.insert(status.log_checkpoint.expect("a kept checkpoint").note);
        let records = client.list().unwrap();
        assert_eq!(records.len(), KILLS, "device {i}");
        for r in records {
            assert_eq!(r.state, CaptureState::Receipted, "device {i}: capture #{}", r.seq);
            let (receipt, _) = client.receipt(&r.id.to_hex()).unwrap().expect("receipt kept");
            let proof = TlogProof::from_text(&receipt.log.expect("in the log").proof).unwrap();
            kept_notes.insert(proof.checkpoint);
            held_ids.insert(r.id.to_hex());
        }
    }
    assert_eq!(held_ids.len(), total);

    // Stored once each; no upload left unfinished, and many went on on another instance.
    let listed = admin(&data[0], &env, &["capture", "list", "--json"]).ok_json();
    let stored: HashSet<String> =
        listed.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(stored, held_ids);
    assert_eq!(listed.as_array().unwrap().len(), total, "no capture stored twice");
    let unfinished = backend.query(&data[0], "SELECT count(*) FROM uploads");
    assert_eq!(unfinished.trim(), "0", "unfinished uploads left");
    let chunks = backend.query(&data[0], "SELECT count(*) FROM upload_chunks");
    assert_eq!(chunks.trim(), "0", "bytes of unfinished uploads left");
    let uploads = patch_upstreams(&nginx.access_log());
    let spread = uploads.values().filter(|instances| instances.len() > 1).count();
    println!("{} tus uploads, {spread} of them on more than one instance", uploads.len());
    assert!(spread >= DEVICES, "only {spread} uploads went on on another instance");

    // Every checkpoint served is a prefix of the final tree, which holds every capture.
    let last_note = http.get(format!("{url}/log/checkpoint")).send().unwrap().bytes().unwrap();
    let last = tlog::verify_checkpoint(&last_note, &key).unwrap();
    assert_eq!(last.size, total as u64);
    let served = served.lock().unwrap().clone();
    println!(
        "{reads} reads of the checkpoint gave {} checkpoints; devices kept {} more or the same",
        served.len(),
        kept_notes.len()
    );
    assert!(served.len() > KILLS, "the log was watched too rarely: {} checkpoints", served.len());
    for note in served.iter().chain(&kept_notes) {
        check_prefix(&http, &url, &key, note, &last);
    }
    let mut sorted: Vec<_> = takeovers.iter().map(Duration::as_millis).collect();
    sorted.sort_unstable();
    println!("takeovers (ms): {sorted:?}");

    // The auditor, through nginx: every tile, entry and photo.
    let run: Run = std::process::Command::new(bin("hattama"))
        .args(["audit", &format!("{url}/log"), "--key", &vkey, "--photos", "--json"])
        .output()
        .unwrap()
        .into();
    let report = run.ok_json();
    assert_eq!(report["problem_count"], 0, "{run:?}");
    assert_eq!(report["size"], total, "{run:?}");
    assert_eq!(report["evidence_checked"], total, "{run:?}");
    let errors = nginx.error_log();
    println!("nginx error log: {} lines", errors.lines().count());
}
