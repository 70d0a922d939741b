//! [Capture] end to end: the real `hattama` CLI on real photos nobody here wrote, hostile inputs,
//! bundles, deletion, and crash safety with SIGKILL.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hattama_core::evidence::Sha256Hash;
use hattama_core::hooks::POINTS;
use hattama_core::store::Store;
use hattama_tests::{
    GO_IMAGE, GOEXIF, Hattama, check_store_consistent, files, sample_dir, textured_jpeg,
};
use rand::Rng;
use serde_json::Value;

fn goexif_samples() -> Vec<PathBuf> {
    let mut all = files(&sample_dir(&format!("{GOEXIF}/samples")), &["jpg"]);
    all.extend(files(&sample_dir(&format!("{GOEXIF}/corrupt")), &["jpg"]));
    all.push(PathBuf::from(format!("{GOEXIF}/sample1.jpg")));
    all
}

/// Complete real photos: Go's image test data, PngSuite, and the goexif samples that carry
/// image data (most of them are only their EXIF block; see `graft_metadata`).
fn real_photos() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = goexif_samples()
        .into_iter()
        .filter(|p| image::load_from_memory(&std::fs::read(p).unwrap()).is_ok())
        .collect();
    let testdata = sample_dir(&format!("{GO_IMAGE}/testdata"));
    all.extend(files(&testdata, &["jpeg", "png"]));
    all.extend(files(&sample_dir(&format!("{GO_IMAGE}/png/testdata/pngsuite")), &["png"]));
    all.extend(
        files(&sample_dir(&format!("{GO_IMAGE}/png/testdata")), &["png"])
            .into_iter()
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with("invalid")),
    );
    all
}

/// The complete APPn and COM segments at the start of a JPEG (a camera's metadata), however
/// the file continues.
fn metadata_segments(jpeg: &[u8]) -> Vec<u8> {
    let mut pos = 2;
    while pos + 4 <= jpeg.len() && jpeg[pos] == 0xFF && matches!(jpeg[pos + 1], 0xE0..=0xEF | 0xFE)
    {
        let len = u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]) as usize;
        if pos + 2 + len > jpeg.len() {
            break;
        }
        pos += 2 + len;
    }
    jpeg[2..pos].to_vec()
}

/// A camera-like photo: the real metadata of a goexif sample (GPS, maker notes, serials,
/// orientation, corrupt tags) in front of the real image data of `host`.
fn graft_metadata(sample: &Path, host: &[u8]) -> Vec<u8> {
    let meta = metadata_segments(&std::fs::read(sample).unwrap());
    assert!(!meta.is_empty(), "{} has no metadata segment", sample.display());
    let mut out = host[..2].to_vec();
    out.extend_from_slice(&meta);
    out.extend_from_slice(&host[2..]);
    out
}

/// Runs ExifTool over files and returns one JSON object of tags per file (`-G1` groups).
fn exiftool(paths: &[PathBuf]) -> Vec<serde_json::Map<String, Value>> {
    let out = Command::new("exiftool")
        .args(["-j", "-a", "-G1", "-n"])
        .args(paths)
        .output()
        .expect("exiftool runs (scripts/test installs libimage-exiftool-perl)");
    let v: Value = serde_json::from_slice(&out.stdout).expect("exiftool JSON");
    v.as_array().unwrap().iter().map(|o| o.as_object().unwrap().clone()).collect()
}

const ALLOWED_GROUPS: &[&str] = &["ExifTool", "System", "File", "Composite", "Adobe", "PNG"];
const FORBIDDEN_WORDS: &[&str] = &[
    "GPS",
    "Latitude",
    "Longitude",
    "Make",
    "Model",
    "Serial",
    "Owner",
    "Artist",
    "Author",
    "Copyright",
    "Comment",
    "Software",
    "Thumbnail",
    "Creator",
    "DateTime",
    "Lens",
];

/// Tags that identify a person, place or device.
fn personal_tags(tags: &serde_json::Map<String, Value>) -> Vec<String> {
    tags.keys()
        .filter(|k| *k != "SourceFile")
        .filter(|k| {
            let (group, name) = k.split_once(':').unwrap_or(("", k));
            !ALLOWED_GROUPS.contains(&group) || FORBIDDEN_WORDS.iter().any(|w| name.contains(w))
        })
        .filter(|k| !k.starts_with("File:File") && !k.starts_with("System:File"))
        .cloned()
        .collect()
}

#[test]
fn real_photos_are_stripped_and_decode_to_the_same_pixels() {
    let host = std::fs::read(format!("{GO_IMAGE}/testdata/video-001.jpeg")).unwrap();
    let grafts = tempfile::tempdir().unwrap();
    let mut photos = real_photos();
    for sample in goexif_samples() {
        let graft = grafts.path().join(sample.file_name().unwrap());
        std::fs::write(&graft, graft_metadata(&sample, &host)).unwrap();
        photos.push(graft);
    }
    assert!(photos.len() >= 140, "expected the Debian samples, found {}", photos.len());
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    let stored_clear = tempfile::tempdir().unwrap();
    let mut stored = Vec::new();
    for (i, photo) in photos.iter().enumerate() {
        let answer = cli.capture(photo, &format!("p{i}")).ok_json();
        let sha = answer["photo_sha256"].as_str().unwrap().to_owned();
        let blob = {
            let kept = Store::open(store.path(), &hattama_tests::test_key()).unwrap();
            kept.blobs().get(&Sha256Hash::from_hex(&sha).unwrap()).unwrap()
        };

        // Same pixels: the stripped photo decodes exactly as the original does.
        let original = image::load_from_memory(&std::fs::read(photo).unwrap()).unwrap();
        let clean = image::load_from_memory(&blob).unwrap();
        assert_eq!(original.color(), clean.color(), "{}", photo.display());
        assert!(original.as_bytes() == clean.as_bytes(), "pixels differ: {}", photo.display());

        // The orientation of f<N>-exif.jpg is N, and it is recorded in the manifest.
        let name = photo.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix('f').and_then(|r| r.strip_suffix("-exif.jpg")) {
            assert_eq!(answer["orientation"], n.parse::<u64>().unwrap(), "{name}");
        }
        // The stored photo as the device decrypts it, for ExifTool.
        let clear = stored_clear.path().join(format!("{i}.img"));
        std::fs::write(&clear, &blob).unwrap();
        stored.push((photo.clone(), clear));
    }

    // ExifTool finds personal or device tags in the originals...
    let originals: Vec<PathBuf> = stored.iter().map(|(p, _)| p.clone()).collect();
    let before = exiftool(&originals);
    let with_gps = before.iter().filter(|t| t.keys().any(|k| k.starts_with("GPS:"))).count();
    let with_device = before.iter().filter(|t| t.keys().any(|k| k.ends_with(":Make"))).count();
    let with_serial = before.iter().filter(|t| t.keys().any(|k| k.contains("Serial"))).count();
    assert!(
        with_gps >= 2 && with_device >= 40 && with_serial >= 1,
        "samples lost their metadata? gps {with_gps}, make {with_device}, serial {with_serial}"
    );
    // ...and none in what was stored.
    let blobs: Vec<PathBuf> = stored.iter().map(|(_, b)| b.clone()).collect();
    for tags in exiftool(&blobs) {
        let bad = personal_tags(&tags);
        assert!(bad.is_empty(), "{}: {bad:?}", tags["SourceFile"]);
    }
    assert_eq!(check_store_consistent(store.path()), photos.len());
}

#[test]
fn goexif_samples_without_image_data_are_refused_as_truncated() {
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    let mut refused = 0;
    for sample in goexif_samples() {
        if image::load_from_memory(&std::fs::read(&sample).unwrap()).is_ok() {
            continue;
        }
        let run = cli.capture(&sample, "p1");
        assert_eq!(run.code, Some(3), "{}: {run:?}", sample.display());
        assert_eq!(run.json()["error"], "photo_refused");
        refused += 1;
    }
    assert!(refused >= 40, "only {refused} metadata-only samples");
    assert_eq!(check_store_consistent(store.path()), 0);
}

#[test]
fn the_orientations_of_all_eight_samples_are_recorded() {
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    for n in 1..=8 {
        let photo = PathBuf::from(format!("{GOEXIF}/samples/f{n}-exif.jpg"));
        let id = cli.capture(&photo, "p1").ok_json()["id"].as_str().unwrap().to_owned();
        let shown = cli.run(&["show", &id, "--json"]).ok_json();
        assert_eq!(shown["manifest"]["photo"]["orientation"], n);
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn set_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[test]
fn hostile_inputs_are_typed_errors_and_nothing_is_stored() {
    let inputs = tempfile::tempdir().unwrap();
    let d = inputs.path();
    let jpeg = std::fs::read(format!("{GO_IMAGE}/testdata/video-001.jpeg")).unwrap();
    let png = std::fs::read(format!("{GO_IMAGE}/testdata/video-001.png")).unwrap();

    let mut huge_jpeg = jpeg.clone();
    let sof = huge_jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    set_be16(&mut huge_jpeg, sof + 5, 65_500);
    set_be16(&mut huge_jpeg, sof + 7, 65_500);

    let mut huge_png = png.clone();
    huge_png[16..24].copy_from_slice(&[0x40, 0, 0, 0, 0x40, 0, 0, 0]);
    let crc = crc_of(&huge_png[12..29]);
    huge_png[29..33].copy_from_slice(&crc.to_be_bytes());

    let mut trailer = jpeg.clone();
    trailer.extend_from_slice(b"PK\x03\x04hidden archive after the image");

    let random: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    let mut heic = vec![0, 0, 0, 0x18];
    heic.extend_from_slice(b"ftypheic\0\0\0\0mif1heic");
    heic.extend_from_slice(&random[..1000]);

    let big = d.join("big.jpg");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(200 * 1024 * 1024).unwrap(); // sparse: 200 MB without writing them

    let cases: Vec<(&str, PathBuf, &str)> = vec![
        ("empty file", write(d, "empty.jpg", b""), "empty"),
        ("random bytes", write(d, "random.jpg", &random), "not a JPEG or PNG"),
        ("truncated JPEG", write(d, "trunc.jpg", &jpeg[..jpeg.len() * 2 / 3]), "truncated"),
        ("JPEG claiming 65500x65500", write(d, "huge.jpg", &huge_jpeg), "65500×65500"),
        ("PNG with a huge IHDR", write(d, "huge.png", &huge_png), "1073741824×1073741824"),
        ("JPEG with a trailer after EOI", write(d, "trailer.jpg", &trailer), "after the end"),
        ("200 MB file", big, "at most"),
        ("HEIC", write(d, "photo.heic", &heic), "HEIC"),
        ("text file named .jpg", write(d, "notes.jpg", b"Protocol: 1200 voters\n"), "not a JPEG"),
        (
            "PNG with a bad CRC",
            PathBuf::from(format!("{GO_IMAGE}/png/testdata/invalid-crc32.png")),
            "checksum",
        ),
        (
            "PNG without IEND",
            PathBuf::from(format!("{GO_IMAGE}/png/testdata/invalid-noend.png")),
            "truncated",
        ),
    ];
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    for (what, path, message) in &cases {
        let started = Instant::now();
        let run = cli.capture(path, "p1");
        assert_eq!(run.code, Some(3), "{what}: {run:?}");
        let err = run.json();
        assert_eq!(err["error"], "photo_refused", "{what}");
        let text = err["message"].as_str().unwrap();
        assert!(text.contains(message), "{what}: message {text:?} lacks {message:?}");
        assert!(run.stderr.contains(message), "{what}: stderr {:?}", run.stderr);
        assert!(started.elapsed() < Duration::from_secs(20), "{what} took too long");
    }
    assert_eq!(cli.run(&["list", "--json"]).ok_json(), serde_json::json!([]));
    assert_eq!(check_store_consistent(store.path()), 0);
    assert_eq!(std::fs::read_dir(store.path().join("blobs")).unwrap().count(), 0);
}

fn crc_of(bytes: &[u8]) -> u32 {
    // CRC-32 (IEEE), bitwise: test code only, independent of the crate under test.
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn bad_fields_are_refused_with_a_typed_error() {
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    let photo = format!("{GO_IMAGE}/testdata/video-001.jpeg");
    for (args, word) in [
        (vec!["--precinct", "../../etc"], "precinct"),
        (vec!["--precinct", "p1", "--note", "a\u{7}b"], "note"),
        (vec!["--precinct", "p1", "--line", "../x=1"], "transcription"),
    ] {
        let mut all = vec!["capture", photo.as_str(), "--election", "e2e", "--json"];
        all.extend(args);
        let run = cli.run(&all);
        assert_eq!(run.code, Some(3), "{run:?}");
        assert_eq!(run.json()["error"], "invalid_field");
        assert!(run.stderr.contains(word), "{run:?}");
    }
    let run =
        cli.run(&["capture", &photo, "--election", "e2e", "--precinct", "p", "--page", "3/2"]);
    assert_eq!(run.code, Some(2), "usage error: {run:?}");
    let run = cli.run(&["show", "abcdef", "--json"]);
    assert_eq!(run.code, Some(4));
    assert_eq!(run.json()["error"], "not_found");
    assert_eq!(check_store_consistent(store.path()), 0);
}

#[test]
fn bundles_verify_and_tampering_is_caught() {
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    let photo = PathBuf::from(format!("{GOEXIF}/samples/f3-exif.jpg"));
    let id = cli.capture(&photo, "p7").ok_json()["id"].as_str().unwrap().to_owned();
    let other = PathBuf::from(format!("{GO_IMAGE}/testdata/video-001.jpeg"));
    let other_id = cli.capture(&other, "p7").ok_json()["id"].as_str().unwrap().to_owned();

    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("b");
    assert_eq!(cli.run(&["export", &id[..8], bundle.to_str().unwrap()]).code, Some(0));
    let ok = cli.run(&["verify", bundle.to_str().unwrap(), "--json"]).ok_json();
    assert_eq!(ok["id"], id.as_str());
    assert_eq!(ok["valid"], true);
    // Exporting into a non-empty directory is refused.
    assert_eq!(cli.run(&["export", &id, bundle.to_str().unwrap()]).code, Some(3));

    let other_bundle = out.path().join("o");
    cli.run(&["export", &other_id, other_bundle.to_str().unwrap()]);

    type Tamper = Box<dyn Fn(&Path)>;
    let flip = |file: &'static str, at: usize| -> Tamper {
        Box::new(move |dir: &Path| {
            let p = dir.join(file);
            let mut b = std::fs::read(&p).unwrap();
            let i = at.min(b.len() - 1);
            b[i] ^= 0x01;
            std::fs::write(p, b).unwrap();
        })
    };
    let other_photo = std::fs::read(other_bundle.join("photo.jpg")).unwrap();
    let exif_back = std::fs::read(&photo).unwrap();
    let cases: Vec<(&str, Tamper)> = vec![
        ("one photo byte", flip("photo.jpg", 400)),
        ("one manifest byte", flip("manifest.json", 30)),
        ("one signature digit", flip("manifest.sig", 5)),
        (
            "another capture's photo",
            Box::new(move |d| std::fs::write(d.join("photo.jpg"), &other_photo).unwrap()),
        ),
        (
            "original with EXIF",
            Box::new(move |d| std::fs::write(d.join("photo.jpg"), &exif_back).unwrap()),
        ),
        (
            "pretty-printed manifest",
            Box::new(|d| {
                let v: Value =
                    serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap())
                        .unwrap();
                std::fs::write(d.join("manifest.json"), serde_json::to_vec_pretty(&v).unwrap())
                    .unwrap();
            }),
        ),
        ("missing photo", Box::new(|d| std::fs::remove_file(d.join("photo.jpg")).unwrap())),
    ];
    for (what, tamper) in cases {
        let copy = out.path().join(format!("t-{}", what.replace(' ', "-")));
        std::fs::create_dir(&copy).unwrap();
        for f in ["manifest.json", "manifest.sig", "photo.jpg"] {
            std::fs::copy(bundle.join(f), copy.join(f)).unwrap();
        }
        tamper(&copy);
        let run = cli.run(&["verify", copy.to_str().unwrap(), "--json"]);
        assert_eq!(run.code, Some(6), "{what}: {run:?}");
        assert_eq!(run.json()["error"], "verification_failed", "{what}");
    }
}

#[test]
fn deleting_an_unsent_capture_leaves_a_visible_gap() {
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    let photos: Vec<PathBuf> =
        (1..=4).map(|n| PathBuf::from(format!("{GOEXIF}/samples/f{n}-exif.jpg"))).collect();
    let ids: Vec<String> = photos[..3]
        .iter()
        .map(|p| cli.capture(p, "p1").ok_json()["id"].as_str().unwrap().to_owned())
        .collect();
    let deleted = cli.run(&["delete", &ids[1], "--json"]).ok_json();
    assert_eq!(deleted["state"], "deleted");
    assert!(deleted.get("photo_sha256").is_none());
    let id4 = cli.capture(&photos[3], "p1").ok_json()["id"].as_str().unwrap().to_owned();

    let list = cli.run(&["list", "--json"]).ok_json();
    let seqs: Vec<(u64, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["seq"].as_u64().unwrap(), r["state"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        seqs,
        vec![
            (4, "captured".into()),
            (3, "captured".into()),
            (2, "deleted".into()),
            (1, "captured".into())
        ]
    );
    // The chain still names the deleted manifest: a verifier sees exactly where the gap is.
    let m3 = cli.run(&["show", &ids[2], "--json"]).ok_json();
    assert_eq!(m3["manifest"]["prev"], ids[1].as_str());
    let m4 = cli.run(&["show", &id4, "--json"]).ok_json();
    assert_eq!(m4["manifest"]["prev"], ids[2].as_str());
    // Its photo is gone, and it cannot be shown, exported or deleted again as evidence.
    assert!(cli.run(&["show", &ids[1], "--json"]).ok_json().get("manifest").is_none());
    let out = tempfile::tempdir().unwrap();
    assert_eq!(cli.run(&["export", &ids[1], out.path().join("x").to_str().unwrap()]).code, Some(4));
    assert_eq!(check_store_consistent(store.path()), 3);
}

/// Spawns a capture that pauses at `point`, waits until it is there, and SIGKILLs it.
fn kill_at(cli: &Hattama, photo: &Path, point: &str, extra: &[&str]) {
    let photo = photo.to_str().unwrap();
    let mut args = vec!["capture", photo, "--election", "e2e", "--precinct", "p1"];
    if !extra.is_empty() {
        args = extra.to_vec();
    }
    let mut child = cli
        .command(&args)
        .env("HATTAMA_TEST_PAUSE_AT", point)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let wanted = format!("hattama-paused {point}");
    loop {
        match lines.next() {
            Some(Ok(line)) if line == wanted => break,
            Some(Ok(_)) => continue,
            other => panic!("process ended before reaching {point}: {other:?}"),
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn a_capture_killed_at_every_pause_point_leaves_a_consistent_store() {
    let photo = PathBuf::from(format!("{GO_IMAGE}/testdata/video-001.q50.420.jpeg"));
    for point in POINTS.iter().filter(|p| !p.starts_with("delete")) {
        let store = tempfile::tempdir().unwrap();
        let cli = Hattama::new(store.path());
        cli.capture(&PathBuf::from(format!("{GOEXIF}/samples/f1-exif.jpg")), "p1").ok_json();
        kill_at(&cli, &photo, point, &[]);
        let live = check_store_consistent(store.path());
        let expected = if *point == "capture:after-commit" { 2 } else { 1 };
        assert_eq!(live, expected, "killed at {point}");
        // The store works on: the next capture chains on what survived.
        cli.capture(&photo, "p2").ok_json();
        assert_eq!(check_store_consistent(store.path()), expected + 1);
    }
}

#[test]
fn a_deletion_killed_after_commit_leaves_no_orphan() {
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    let photo = PathBuf::from(format!("{GOEXIF}/samples/f2-exif.jpg"));
    let id = cli.capture(&photo, "p1").ok_json()["id"].as_str().unwrap().to_owned();
    kill_at(&cli, &photo, "delete:after-commit", &["delete", &id]);
    // The blob is still on disk until the store is reopened...
    assert_eq!(std::fs::read_dir(store.path().join("blobs")).unwrap().count(), 1);
    // ...where recovery removes it.
    assert_eq!(check_store_consistent(store.path()), 0);
    assert_eq!(std::fs::read_dir(store.path().join("blobs")).unwrap().count(), 0);
}

#[test]
fn fifty_captures_killed_at_random_points_leave_consistent_stores() {
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("protocol.jpg");
    std::fs::write(&photo, textured_jpeg(1600, 1200, 7, 92)).unwrap();
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());

    // How long an undisturbed capture takes, end to end, so kills land all over it.
    let started = Instant::now();
    for i in 0..3 {
        cli.capture(&photo, &format!("warm{i}")).ok_json();
    }
    let full = started.elapsed() / 3;
    let mut rng = rand::thread_rng();
    let (mut completed, mut killed) = (0, 0);
    let mut expected_live = 3;
    for i in 0..50 {
        let mut child = cli
            .command(&[
                "capture",
                photo.to_str().unwrap(),
                "--election",
                "e2e",
                "--precinct",
                &format!("r{i}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = full.mul_f64(rng.gen_range(0.0..1.2));
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            completed += 1;
        } else {
            killed += 1;
        }
        let live = check_store_consistent(store.path());
        // A capture reported done is never lost; a killed one is either whole or absent.
        if status.success() {
            expected_live += 1;
            assert_eq!(live, expected_live, "a completed capture was lost");
        } else {
            assert!(live == expected_live || live == expected_live + 1, "capture {i}: {live}");
            expected_live = live;
        }
    }
    assert!(killed >= 10, "too few kills landed mid-capture ({killed} of 50, {completed} done)");
}
