//! The storage conformance suite: the contract of every trait method, exercised through the
//! traits only (never through SQL), so that a backend is correct when the suite passes (the
//! pattern of matrix-rust-sdk's `statestore_integration_tests!`).
//!
//! Each check is a generic function over the traits it needs; the macros turn them into
//! `#[test]`s for one backend, given an expression that opens a fresh, empty storage and
//! answers `Some((storage, guard))` (the guard keeps its directory or schema until the test
//! ends) or `None` when the backend is not available here (then the test says so and passes;
//! `scripts/test` makes sure every backend is available there).

use std::collections::BTreeMap;

use hattama_core::election::{Election, Names, Precinct, ProtocolTemplate};
use hattama_core::evidence::{
    DeviceKey, EvidenceKind, Manifest, MediaType, Page, PhotoInfo, Sha256Hash,
};

use super::console::{MissingStation, NewInvites, RefusalRecord, RegionTally};
use super::review::{
    AuditFilter, Decision, DecisionKind, Flag, NewAudit, NewEntry, NewUser, QueueFilter, QueueView,
    ReviewState, Role, Transcription, TranscriptionStatus, User,
};
use super::{
    Backend, CommitRefusal, Committed, EnrollRefusal, GalleryStorage, NewCapture, NewUpload,
    PhotoBytes, SMALL_PHOTO_BYTES, Storage, StorageError,
};

fn names(s: &str) -> Names {
    Names { kk: s.into(), ru: s.into(), en: s.into() }
}

/// An election `id` with precincts `p1`, `p2`, `p3` (numbers 1, 2, 3; `p3` in region `r2`).
pub fn election(id: &str) -> Election {
    let precinct = |n: u32, region: &str| Precinct {
        id: format!("p{n}"),
        number: n,
        region: region.into(),
        district: "d1".into(),
        address: format!("street {n}"),
    };
    Election {
        id: id.into(),
        names: names(id),
        count_time_ms: None,
        utc_offset_min: None,
        high_risk: false,
        photos_after_receipt: None,
        precincts: vec![precinct(1, "r1"), precinct(2, "r1"), precinct(3, "r2")],
        protocol: ProtocolTemplate { lines: Vec::new(), relations: Vec::new() },
    }
}

/// A device key from a small number.
pub fn key(n: u8) -> DeviceKey {
    DeviceKey([n; 32])
}

/// Photo bytes of `len` from a seed (not a real photo: storage never looks inside).
pub fn photo(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut block = Sha256Hash::of(&seed.to_le_bytes()).0;
    while out.len() < len {
        out.extend_from_slice(&block[..block.len().min(len - out.len())]);
        block = Sha256Hash::of(&block).0;
    }
    out
}

/// A capture of device `key` (enrolled) at `precinct`, with sequence number `seq`, ready to
/// commit with its photo held.
pub fn capture(
    key: &DeviceKey,
    election: &str,
    precinct: &str,
    seq: u64,
    bytes: &[u8],
) -> NewCapture {
    let m = Manifest {
        captured_at_ms: 1_000 + seq,
        device_key: *key,
        election: election.into(),
        kind: EvidenceKind::Posted,
        location: None,
        note: None,
        page: Page { count: 1, number: 1 },
        photo: PhotoInfo {
            bytes: bytes.len() as u64,
            height: 1,
            media_type: MediaType::Jpeg,
            orientation: 1,
            sha256: Sha256Hash::of(bytes),
            width: 1,
        },
        precinct: precinct.into(),
        prev: Sha256Hash::ZERO,
        seq,
        transcription: None,
        utc_offset_min: 0,
        v: 1,
    };
    let manifest = serde_json::to_vec(&m).expect("a manifest encodes");
    NewCapture {
        id: Sha256Hash::of(&manifest),
        device_id: super::device_id(key),
        seq,
        election: election.into(),
        precinct: precinct.into(),
        manifest,
        signature: [7; 64],
        photo_sha256: Sha256Hash::of(bytes),
        photo_bytes: bytes.len() as u64,
        media_type: "image/jpeg".into(),
        received_at_ms: 2_000 + seq,
        receipt: format!("receipt of {seq}").into_bytes(),
        photo: PhotoBytes::Held(bytes.to_vec().into()),
    }
}

/// Imports election `e` and enrolls device `n` for `precincts` of it.
pub fn enrolled(s: &(impl Storage + ?Sized), e: &str, n: u8, precincts: &[&str]) -> DeviceKey {
    if s.election(e).expect("election").is_none() {
        s.import_election(&election(e), 1).expect("import");
    }
    let precincts: Vec<String> = precincts.iter().map(|p| p.to_string()).collect();
    let code = s.create_invites(e, &precincts, 1, 1).expect("invite").remove(0);
    s.enroll(&code, &key(n), 2).expect("enroll").expect("enrolled");
    key(n)
}

/// Elections: import (new, then replaced), read back, listed; what an upload's checks ask.
pub fn elections_and_admission(s: &(impl Storage + GalleryStorage + ?Sized)) {
    let e = election("e1");
    assert!(s.import_election(&e, 10).unwrap(), "a new election");
    assert!(!s.import_election(&e, 11).unwrap(), "the same election again");
    let mut changed = e.clone();
    changed.precincts[0].address = "another street".into();
    assert!(!s.import_election(&changed, 12).unwrap());
    assert_eq!(s.election("e1").unwrap(), Some(changed.clone()));
    assert_eq!(s.election("nope").unwrap(), None);
    s.import_election(&election("e0"), 13).unwrap();
    let ids: Vec<String> = s.elections().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["e0", "e1"], "elections by id");

    let nobody = s.admission("nope", "p1", &key(9)).unwrap();
    assert!(!nobody.election_known && !nobody.precinct_known && !nobody.device_known);
    assert_eq!(nobody.protocol_lines, 0);
    let unknown_device = s.admission("e1", "p1", &key(9)).unwrap();
    assert!(unknown_device.election_known && unknown_device.precinct_known);
    assert!(!unknown_device.device_known && !unknown_device.precinct_assigned);
    assert!(!s.admission("e1", "p9", &key(9)).unwrap().precinct_known);

    let k = enrolled(s, "e1", 1, &["p1"]);
    let a = s.admission("e1", "p1", &k).unwrap();
    assert!(a.device_known && a.precinct_assigned && !a.device_revoked);
    assert!(!s.admission("e1", "p2", &k).unwrap().precinct_assigned, "not its precinct");
    assert!(!s.admission("e0", "p1", &k).unwrap().precinct_assigned, "not its election");
}

/// Invites and enrollment: a code enrolls once, the same device may ask again, another
/// device is refused, an unknown code is refused, a key observes one election only;
/// revocation.
pub fn enrollment(s: &(impl Storage + ?Sized)) {
    s.import_election(&election("e1"), 1).unwrap();
    s.import_election(&election("e2"), 1).unwrap();
    let codes = s.create_invites("e1", &["p1".into(), "p2".into()], 3, 5).unwrap();
    assert_eq!(codes.len(), 3);
    assert!(codes.iter().all(|c| c.len() == 24), "codes are XXXX-XXXX-XXXX-XXXX-XXXX: {codes:?}");
    assert_ne!(codes[0], codes[1]);
    assert!(matches!(
        s.create_invites("nope", &["p1".into()], 1, 5),
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(s.create_invites("e1", &["p9".into()], 1, 5), Err(StorageError::NotFound(_))));

    let device = s.enroll(&codes[0], &key(1), 7).unwrap().expect("enrolled");
    assert_eq!(device.id, super::device_id(&key(1)));
    assert_eq!(device.election, "e1");
    assert_eq!(device.precincts, ["p1", "p2"]);
    assert_eq!((device.enrolled_at_ms, device.revoked_at_ms), (7, None));
    assert_eq!(s.enroll(&codes[0], &key(1), 8).unwrap(), Ok(device.clone()), "asked again");
    assert_eq!(s.enroll(&codes[0], &key(2), 8).unwrap(), Err(EnrollRefusal::CodeUsed));
    assert_eq!(s.enroll("AAAA-AAAA", &key(2), 8).unwrap(), Err(EnrollRefusal::UnknownCode));

    // A second code of the same election adds its precincts.
    let more = s.create_invites("e1", &["p3".into()], 1, 9).unwrap();
    let device = s.enroll(&more[0], &key(1), 9).unwrap().expect("enrolled again");
    assert_eq!(device.precincts, ["p1", "p2", "p3"]);
    // A code of another election needs another device.
    let other = s.create_invites("e2", &["p1".into()], 1, 9).unwrap();
    assert_eq!(
        s.enroll(&other[0], &key(1), 9).unwrap(),
        Err(EnrollRefusal::OtherElection { observes: "e1".into(), code_for: "e2".into() })
    );
    let second = s.enroll(&other[0], &key(2), 10).unwrap().expect("another device");

    let devices = s.devices().unwrap();
    assert_eq!(devices.iter().map(|d| &d.id).collect::<Vec<_>>(), [&device.id, &second.id]);
    assert!(s.revoke_device(&device.id, 20).unwrap());
    assert!(s.revoke_device(&device.id, 30).unwrap(), "revoking again keeps the first time");
    assert!(!s.revoke_device("nope", 30).unwrap());
    let revoked = s.devices().unwrap().remove(0);
    assert_eq!(revoked.revoked_at_ms, Some(20));
    assert!(s.admission("e1", "p1", &key(1)).unwrap().device_revoked);
}

/// Upload sessions: created once, bytes appended at the offset, a failed PATCH rolled back,
/// read back, listed with their device, discarded.
pub fn uploads(s: &(impl Storage + ?Sized)) {
    let k = enrolled(s, "e1", 1, &["p1"]);
    let bytes = photo(1, 3000);
    let c = capture(&k, "e1", "p1", 1, &bytes);
    let new = NewUpload {
        id: c.id,
        manifest: c.manifest.clone(),
        signature: c.signature,
        length: bytes.len() as u64,
        now_ms: 40,
    };
    assert!(s.upload(&c.id).unwrap().is_none());
    assert!(s.create_upload(&new).unwrap(), "the first creation creates the session");
    assert!(!s.create_upload(&new).unwrap(), "a second creation finds it");
    let info = s.upload(&c.id).unwrap().expect("the upload");
    assert_eq!((info.length, info.offset, info.stored), (3000, 0, false));
    assert_eq!((info.manifest, info.signature), (c.manifest.clone(), c.signature));
    let open = s.open_uploads().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, c.id);
    assert_eq!(open[0].device_key, k.to_hex());
    assert_eq!((open[0].length, open[0].created_at_ms), (3000, 40));

    let mut w = s.upload_writer(&c.id, 0).unwrap();
    w.write_all(&bytes[..1000]).unwrap();
    assert_eq!(w.finish().unwrap(), 1000);
    assert_eq!(s.upload(&c.id).unwrap().unwrap().offset, 1000);
    // A PATCH whose checksum failed leaves nothing.
    let mut w = s.upload_writer(&c.id, 1000).unwrap();
    w.write_all(&[0; 500]).unwrap();
    assert_eq!(w.rollback().unwrap(), 1000);
    assert_eq!(s.upload(&c.id).unwrap().unwrap().offset, 1000);
    let mut w = s.upload_writer(&c.id, 1000).unwrap();
    w.write_all(&bytes[1000..]).unwrap();
    assert_eq!(w.finish().unwrap(), 3000);
    assert_eq!(s.upload(&c.id).unwrap().unwrap().offset, 3000);
    assert_eq!(s.read_upload(&c.id, 3001).unwrap(), bytes);
    assert_eq!(s.read_upload(&c.id, 10).unwrap(), &bytes[..10]);

    s.discard_upload(&c.id).unwrap();
    assert!(s.upload(&c.id).unwrap().is_none());
    assert!(s.open_uploads().unwrap().is_empty());
    s.discard_upload(&c.id).unwrap();
}

use std::io::Write as _;

/// Commits: a capture is stored with its receipt, photo and log entry at the next position; a
/// second commit of it changes nothing and answers the first receipt; a completed upload's
/// bytes become the photo, small or large.
pub fn commit_capture(s: &(impl Storage + ?Sized)) {
    let k = enrolled(s, "e1", 1, &["p1", "p2"]);
    let small = photo(1, 100);
    let first = capture(&k, "e1", "p1", 1, &small);
    let done = s.commit_capture(first.clone()).unwrap().unwrap();
    assert_eq!(done.receipt, first.receipt);
    assert_eq!(done.log_index, 0);
    let entry = done.log_entry.clone().expect("a new capture's entry");
    let mut again = first.clone();
    again.receipt = b"another receipt".to_vec();
    assert_eq!(
        s.commit_capture(again).unwrap().unwrap(),
        Committed { receipt: first.receipt.clone(), log_index: 0, log_entry: None },
        "the first receipt, and nothing new"
    );
    assert_eq!(s.capture_count().unwrap(), 1);
    assert_eq!(s.receipt(&first.id).unwrap(), Some(first.receipt.clone()));
    assert_eq!(s.receipt(&Sha256Hash::ZERO).unwrap(), None);
    assert_eq!(s.photo(&first.photo_sha256).unwrap(), Some(small.clone()));
    assert_eq!(s.photo(&Sha256Hash::ZERO).unwrap(), None);
    assert_eq!(s.evidence(&first.id).unwrap(), Some((first.manifest.clone(), first.signature)));
    assert_eq!(s.log_index(&first.id).unwrap(), Some(0));
    assert_eq!(s.log_entries(0, 10).unwrap(), [entry]);
    let info = s.upload(&first.id).unwrap().expect("a stored capture answers as an upload");
    assert!(info.stored);
    assert_eq!(info.offset, info.length);

    // Through an upload: a large photo (a file in the embedded backend) and a small one.
    let large = photo(2, SMALL_PHOTO_BYTES as usize + 5000);
    for (seq, bytes) in [(2, &large), (3, &photo(3, 200))] {
        let mut c = capture(&k, "e1", "p2", seq, bytes);
        s.create_upload(&NewUpload {
            id: c.id,
            manifest: c.manifest.clone(),
            signature: c.signature,
            length: bytes.len() as u64,
            now_ms: 1,
        })
        .unwrap();
        let mut w = s.upload_writer(&c.id, 0).unwrap();
        w.write_all(bytes).unwrap();
        w.finish().unwrap();
        c.photo = PhotoBytes::Upload;
        let done = s.commit_capture(c.clone()).unwrap().unwrap();
        assert_eq!(done.log_index, seq - 1);
        assert_eq!(s.photo(&c.photo_sha256).unwrap().as_ref(), Some(bytes));
        assert!(s.upload(&c.id).unwrap().unwrap().stored);
        assert!(s.open_uploads().unwrap().is_empty(), "a completed upload is no longer open");
    }
    // A large photo held in memory.
    let held = photo(4, SMALL_PHOTO_BYTES as usize + 1);
    let c = capture(&k, "e1", "p2", 4, &held);
    assert_eq!(s.commit_capture(c.clone()).unwrap().unwrap().log_index, 3);
    assert_eq!(s.photo(&c.photo_sha256).unwrap(), Some(held));
    // The same photo in a second capture shares it.
    let twin = capture(&k, "e1", "p1", 5, &small);
    assert_eq!(s.commit_capture(twin).unwrap().unwrap().log_index, 4);
    assert_eq!(s.photo(&first.photo_sha256).unwrap(), Some(small));

    assert_eq!(s.capture_count().unwrap(), 5);
    let listed = s.captures().unwrap();
    assert_eq!(listed.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(listed[0].id, first.id);
    assert_eq!(listed[0].device_id, super::device_id(&k));
    assert_eq!((listed[0].photo_bytes, listed[0].received_at_ms), (100, 2001));
    let device = super::device_id(&k);
    assert_eq!(s.captures_of_device_in_precinct(&device, "e1", "p1").unwrap(), 2);
    assert_eq!(s.captures_of_device_in_precinct(&device, "e1", "p2").unwrap(), 3);
    assert_eq!(s.captures_of_device_in_precinct(&device, "e1", "p3").unwrap(), 0);
    assert_eq!(s.log_entries(0, 10).unwrap().len(), 5);
    assert_eq!(s.log_entries(3, 4).unwrap().len(), 1);
    assert_eq!(s.log_entry_stored_at(1).unwrap(), Some(2002));
    assert_eq!(s.log_entry_stored_at(9).unwrap(), None);

    // Once its device is revoked, a new capture is refused and leaves nothing; what it stored
    // before stays, and committing it again still answers its receipt.
    assert!(s.revoke_device(&device, 3000).unwrap());
    for bytes in [photo(6, 300), photo(7, SMALL_PHOTO_BYTES as usize + 1)] {
        let refused = capture(&k, "e1", "p1", 6, &bytes);
        assert_eq!(s.commit_capture(refused.clone()).unwrap(), Err(CommitRefusal::DeviceRevoked));
        assert_eq!(s.receipt(&refused.id).unwrap(), None);
        assert_eq!(s.capture_count().unwrap(), 5);
    }
    let again = s.commit_capture(first.clone()).unwrap().unwrap();
    assert_eq!((again.receipt, again.log_index, again.log_entry), (first.receipt, 0, None));
    // The log goes on without a gap.
    let other = enrolled(s, "e1", 2, &["p1"]);
    assert_eq!(
        s.commit_capture(capture(&other, "e1", "p1", 1, &photo(8, 10))).unwrap().unwrap().log_index,
        5
    );
    assert_eq!(s.log_entries(0, 10).unwrap().len(), 6);
}

/// The log: hashes and checkpoints are appended in one step that fails, changing nothing,
/// unless the log is as long as its writer read it: never two checkpoints for one size.
pub fn log(s: &(impl Storage + GalleryStorage + ?Sized)) {
    let k = enrolled(s, "e1", 1, &["p1"]);
    assert_eq!(s.log_size().unwrap(), 0);
    assert_eq!(s.latest_checkpoint().unwrap(), None);
    for seq in 1..=3 {
        s.commit_capture(capture(&k, "e1", "p1", seq, &photo(seq, 10))).unwrap().unwrap();
    }
    let public = s.public_captures("e1", None).unwrap();
    assert!(public.iter().all(|c| c.log_index.is_none()), "no checkpoint covers them yet");

    let hashes: Vec<[u8; 32]> = (0..4u8).map(|n| [n + 1; 32]).collect();
    s.append_log(0, 2, 0, &hashes[..3], b"checkpoint 2").unwrap();
    assert_eq!(s.log_size().unwrap(), 2);
    assert_eq!(s.latest_checkpoint().unwrap(), Some((2, b"checkpoint 2".to_vec())));
    assert_eq!(s.checkpoint(2).unwrap(), Some(b"checkpoint 2".to_vec()));
    assert_eq!(s.checkpoint(1).unwrap(), None);
    assert_eq!(s.read_log_hashes(&[2, 0, 1]).unwrap(), [hashes[2], hashes[0], hashes[1]]);
    assert!(matches!(s.read_log_hashes(&[3]), Err(StorageError::NotFound(_))));
    let public = s.public_captures("e1", None).unwrap();
    assert_eq!(
        public.iter().map(|c| c.log_index).collect::<Vec<_>>(),
        [Some(0), Some(1), None],
        "a position counts once a checkpoint covers it"
    );

    // A second writer that read the log at size 0, or any size but 2, publishes nothing.
    assert!(s.append_log(0, 2, 0, &hashes[..3], b"another checkpoint 2").is_err());
    assert!(s.append_log(0, 3, 0, &hashes, b"checkpoint 3 from 0").is_err());
    assert!(s.append_log(1, 3, 1, &hashes[1..], b"checkpoint 3 from 1").is_err());
    assert_eq!(s.checkpoint(2).unwrap(), Some(b"checkpoint 2".to_vec()));
    assert_eq!(s.checkpoint(3).unwrap(), None);
    assert_eq!(s.log_size().unwrap(), 2);
    // Not past the stored entries.
    assert!(s.append_log(2, 4, 3, &[[9; 32]; 4], b"checkpoint 4").is_err());
    assert_eq!(s.log_size().unwrap(), 2);

    s.append_log(2, 3, 3, &hashes[3..], b"checkpoint 3").unwrap();
    assert_eq!(s.log_size().unwrap(), 3);
    assert_eq!(s.latest_checkpoint().unwrap(), Some((3, b"checkpoint 3".to_vec())));
    assert_eq!(s.read_log_hashes(&[3]).unwrap(), [hashes[3]]);

    // Many hashes at once, across blocks of any size a backend keeps them in.
    for seq in 4..=200 {
        s.commit_capture(capture(&k, "e1", "p1", seq, &photo(seq, 10))).unwrap().unwrap();
    }
    let more: Vec<[u8; 32]> = (0..300u64).map(|n| Sha256Hash::of(&n.to_le_bytes()).0).collect();
    s.append_log(3, 200, 4, &more, b"checkpoint 200").unwrap();
    let indexes: Vec<u64> = (0..304).collect();
    let all = s.read_log_hashes(&indexes).unwrap();
    assert_eq!(&all[..4], &hashes[..]);
    assert_eq!(&all[4..], &more[..]);
}

/// The public side: official results in versions (the same figures again are no new
/// version), public captures per election and precinct, the manifest of a photo, and the
/// change counter, which changes with every commit.
pub fn gallery(s: &(impl Storage + GalleryStorage + ?Sized)) {
    let k = enrolled(s, "e1", 1, &["p1", "p2"]);
    let before = s.change_counter().unwrap();
    assert_eq!(s.change_counter().unwrap(), before, "no commit, no change");
    let one = capture(&k, "e1", "p1", 1, &photo(1, 10));
    s.commit_capture(one.clone()).unwrap().unwrap();
    let after = s.change_counter().unwrap();
    assert_ne!(after, before, "a commit changes the counter");
    let two = capture(&k, "e1", "p2", 2, &photo(2, 10));
    s.commit_capture(two.clone()).unwrap().unwrap();
    assert_ne!(s.change_counter().unwrap(), after);

    let all = s.public_captures("e1", None).unwrap();
    assert_eq!(all.iter().map(|c| c.id).collect::<Vec<_>>(), [one.id, two.id], "in order received");
    assert_eq!(all[0].manifest, one.manifest);
    assert_eq!(all[0].signature, one.signature);
    assert_eq!(all[0].receipt, one.receipt);
    assert_eq!((all[0].photo_sha256, all[0].photo_bytes), (one.photo_sha256, 10));
    let p2 = s.public_captures("e1", Some("p2")).unwrap();
    assert_eq!(p2.iter().map(|c| c.id).collect::<Vec<_>>(), [two.id]);
    assert!(s.public_captures("e9", None).unwrap().is_empty());
    assert_eq!(s.manifest_of_photo(&one.photo_sha256).unwrap(), Some(one.manifest.clone()));
    assert_eq!(s.manifest_of_photo(&Sha256Hash::ZERO).unwrap(), None);
    let mut precincts = s.capture_precincts("e1").unwrap();
    precincts.sort();
    let mut expected = vec![(one.id, "p1".to_owned()), (two.id, "p2".to_owned())];
    expected.sort();
    assert_eq!(precincts, expected);

    let figures: BTreeMap<String, BTreeMap<String, u64>> = [
        ("p1".to_owned(), [("1".to_owned(), 10), ("2".to_owned(), 20)].into()),
        ("p2".to_owned(), [("1".to_owned(), 5)].into()),
    ]
    .into();
    assert!(s.official_versions("e1").unwrap().is_empty());
    assert_eq!(s.import_official("e1", &figures, "cik.csv", "ab", 50).unwrap(), Some(1));
    assert_eq!(s.import_official("e1", &figures, "again.csv", "ab", 60).unwrap(), None);
    let mut changed = figures.clone();
    changed.get_mut("p2").unwrap().insert("1".into(), 6);
    assert_eq!(s.import_official("e1", &changed, "fixed.csv", "cd", 70).unwrap(), Some(2));
    let versions = s.official_versions("e1").unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(
        (versions[0].version, versions[0].imported_at_ms, versions[0].source.as_str()),
        (1, 50, "cik.csv")
    );
    assert_eq!(
        (versions[1].version, versions[1].sha256.as_str(), versions[1].precincts),
        (2, "cd", 2)
    );
    assert_eq!(s.official_figures("e1", 1).unwrap(), figures);
    assert_eq!(s.official_figures("e1", 2).unwrap(), changed);
    assert!(s.official_figures("e1", 3).unwrap().is_empty());
}

/// Accounts and sessions: a name is taken once; a session lives until it expires, its user is
/// disabled or it is deleted; each account change is stored with the event made of it.
pub fn accounts_and_sessions(s: &(impl Backend + ?Sized)) {
    let event = |action: &'static str| {
        move |u: &User| NewAudit {
            at_ms: 5,
            action: action.into(),
            after: Some(format!("{{\"id\":{}}}", u.id)),
            ..NewAudit::default()
        }
    };
    let new = |name: &str, role| NewUser {
        username: name.into(),
        display_name: format!("{name} shown"),
        role,
        regions: if role == Role::Coordinator { vec!["r1".into()] } else { Vec::new() },
    };
    let ann = s.create_user(&new("ann", Role::Admin), "hash-a", 1, &event("created")).unwrap();
    let bob =
        s.create_user(&new("bob", Role::Coordinator), "hash-b", 2, &event("created")).unwrap();
    assert_ne!(ann.id, bob.id);
    assert_eq!(
        (bob.role, bob.regions.clone(), bob.disabled, bob.created_at_ms),
        (Role::Coordinator, vec!["r1".to_owned()], false, 2)
    );
    assert!(matches!(
        s.create_user(&new("ann", Role::Supervisor), "x", 3, &event("created")),
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(s.user_by_name("bob").unwrap(), Some((bob.clone(), "hash-b".to_owned())));
    assert_eq!(s.user_by_name("nobody").unwrap(), None);
    assert_eq!(s.users().unwrap(), [ann.clone(), bob.clone()]);

    let token = [3u8; 32];
    s.create_session(&token, bob.id, "csrf", 10, 100).unwrap();
    let session = s.session(&token, 50).unwrap().expect("a live session");
    assert_eq!(
        (session.user, session.csrf.as_str(), session.expires_at_ms),
        (bob.clone(), "csrf", 100)
    );
    assert!(s.session(&token, 100).unwrap().is_none(), "expired");
    assert!(s.session(&[4; 32], 50).unwrap().is_none());

    assert!(s.disable_user("bob", 60, &event("disabled")).unwrap());
    assert!(!s.disable_user("nobody", 60, &event("disabled")).unwrap());
    assert!(s.session(&token, 61).unwrap().is_none(), "a disabled user's sessions end");
    assert!(s.user_by_name("bob").unwrap().unwrap().0.disabled);
    assert!(s.set_password("bob", "hash-c", &event("reset")).unwrap());
    assert!(!s.set_password("nobody", "x", &event("reset")).unwrap());
    let (bob_now, hash) = s.user_by_name("bob").unwrap().unwrap();
    assert_eq!((bob_now.disabled, hash.as_str()), (false, "hash-c"));
    s.create_session(&token, bob.id, "csrf2", 70, 200).unwrap();
    assert!(s.session(&token, 71).unwrap().is_some());
    s.delete_session(&token).unwrap();
    assert!(s.session(&token, 72).unwrap().is_none());

    let events = s.audit_events(&AuditFilter::default()).unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["created", "created", "disabled", "reset"], "oldest first");
    assert_eq!(events[1].after.as_deref(), Some(format!("{{\"id\":{}}}", bob.id).as_str()));
    s.append_audit(&NewAudit {
        at_ms: 80,
        user_id: Some(ann.id),
        action: "login".into(),
        ..NewAudit::default()
    })
    .unwrap();
    let newest = s.audit_events(&AuditFilter { limit: 2, ..AuditFilter::default() }).unwrap();
    assert_eq!(newest.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["login", "reset"]);
    assert_eq!(newest[0].user_name.as_deref(), Some("ann shown"), "the user's name then");
    assert!(newest[0].id > newest[1].id);
}

/// Stores captures for the review: device 1 at p1 seq 1 and 3 (a gap), at p2 seq 4 with the
/// photo of seq 1 (a duplicate), device 2 at p3 seq 1. Returns their ids in that order.
fn review_fixture(s: &(impl Backend + ?Sized)) -> Vec<Sha256Hash> {
    let one = enrolled(s, "e1", 1, &["p1", "p2"]);
    let two = enrolled(s, "e1", 2, &["p3"]);
    let same = photo(1, 50);
    let captures = [
        capture(&one, "e1", "p1", 1, &same),
        capture(&one, "e1", "p1", 3, &photo(3, 50)),
        capture(&one, "e1", "p2", 4, &same),
        capture(&two, "e1", "p3", 1, &photo(9, 50)),
    ];
    captures
        .into_iter()
        .map(|c| {
            s.commit_capture(c.clone()).unwrap().unwrap();
            c.id
        })
        .collect()
}

/// The review index, its flags and queue, decisions (refused on a stale page), transcription
/// entries (refused when someone entered meanwhile) and the audit trail of each.
pub fn review(s: &(impl Backend + ?Sized)) {
    let ids = review_fixture(s);
    let user = s
        .create_user(
            &NewUser {
                username: "c".into(),
                display_name: "Coordinator".into(),
                role: Role::Admin,
                regions: Vec::new(),
            },
            "h",
            1,
            &|_| NewAudit::default(),
        )
        .unwrap();
    s.refresh_index().unwrap();
    s.refresh_index().unwrap();
    let all = QueueFilter { election: "e1".into(), ..QueueFilter::default() };
    let page = s.queue(&all, 0, 10).unwrap();
    assert_eq!(page.total, 4);
    let order: Vec<Sha256Hash> = page.items.iter().map(|i| i.capture).collect();
    assert_eq!(
        order,
        [ids[0], ids[1], ids[2], ids[3]],
        "by region, district, number, page, arrival"
    );
    let first = &page.items[0];
    assert_eq!(
        (first.precinct.as_str(), first.number, first.region.as_str(), first.address.as_str()),
        ("p1", 1, "r1", "street 1")
    );
    assert_eq!(
        (first.seq, first.page, first.pages, first.kind.as_str(), first.state),
        (1, 1, 1, "posted", ReviewState::New)
    );
    assert_eq!(Flag::of_bits(page.items[0].flags), [Flag::DuplicatePhoto]);
    assert_eq!(Flag::of_bits(page.items[1].flags), [Flag::ChainGap]);
    assert_eq!(Flag::of_bits(page.items[2].flags), [Flag::ChainGap, Flag::DuplicatePhoto]);
    assert_eq!(page.items[3].flags, 0);
    assert_eq!(
        s.queue(&all, 1, 2).unwrap().items.iter().map(|i| i.capture).collect::<Vec<_>>(),
        [ids[1], ids[2]]
    );
    let flagged = QueueFilter { flag: Some(Flag::ChainGap), ..all.clone() };
    assert_eq!(s.queue(&flagged, 0, 10).unwrap().total, 2);
    let scoped = QueueFilter { scope: Some(vec!["r2".into()]), ..all.clone() };
    assert_eq!(
        s.queue(&scoped, 0, 10).unwrap().items.iter().map(|i| i.capture).collect::<Vec<_>>(),
        [ids[3]]
    );
    let by_number = QueueFilter { precinct: Some("2".into()), ..all.clone() };
    assert_eq!(s.queue(&by_number, 0, 10).unwrap().total, 1);
    assert_eq!(s.queue_item(&ids[1]).unwrap().as_ref(), Some(&page.items[1]));
    assert_eq!(s.queue_item(&Sha256Hash::ZERO).unwrap(), None);
    assert_eq!(s.queue_neighbours(&all, &page.items[1]).unwrap(), (Some(ids[0]), Some(ids[2])));
    assert_eq!(s.queue_neighbours(&all, &page.items[0]).unwrap(), (None, Some(ids[1])));
    assert_eq!(s.precinct_items("e1", "p1").unwrap().len(), 2);
    assert_eq!(
        s.regions("e1").unwrap(),
        [("r1".to_owned(), vec!["d1".to_owned()]), ("r2".to_owned(), vec!["d1".to_owned()])]
    );
    assert!(s.regions("e9").unwrap().is_empty());
    assert_eq!(s.election_ids().unwrap(), ["e1"]);

    let accept = Decision { kind: DecisionKind::Accepted, reason: None, at_ms: 30 };
    let audit = |on: &Sha256Hash| NewAudit {
        at_ms: 30,
        user_id: Some(user.id),
        action: "decision".into(),
        capture: Some(on.to_hex()),
        ..NewAudit::default()
    };
    s.record_decision(&ids[0], user.id, &accept, &audit(&ids[0]), Some(0)).unwrap();
    let reject =
        Decision { kind: DecisionKind::Rejected, reason: Some("unreadable".into()), at_ms: 31 };
    assert!(
        matches!(
            s.record_decision(&ids[0], user.id, &reject, &audit(&ids[0]), Some(0)),
            Err(StorageError::Conflict(_))
        ),
        "a stale page"
    );
    let record = s.decision_record(&ids[0]).unwrap().expect("decided");
    assert_eq!((record.user_name.as_str(), &record.decision), ("Coordinator", &accept));
    s.record_decision(&ids[0], user.id, &reject, &audit(&ids[0]), Some(record.id)).unwrap();
    s.record_decision(&ids[3], user.id, &accept, &audit(&ids[3]), None).unwrap();
    assert_eq!(s.decision(&ids[0]).unwrap(), Some(reject.clone()));
    assert_eq!(s.decision(&ids[1]).unwrap(), None);
    let decisions = s.capture_decisions("e1").unwrap();
    assert_eq!(decisions.len(), 2);
    assert_eq!(decisions[&ids[0]], reject);
    let device = super::device_id(&key(1));
    assert_eq!(s.device_decisions(&device, 10).unwrap(), [(ids[0], reject.clone())]);
    assert_eq!(s.queue_item(&ids[0]).unwrap().unwrap().state, ReviewState::Rejected);
    let rejected = QueueFilter { state: Some(ReviewState::Rejected), ..all.clone() };
    assert_eq!(s.queue(&rejected, 0, 10).unwrap().total, 1, "counts follow decisions");
    assert_eq!(s.queue(&all, 0, 10).unwrap().total, 4);
    let on_capture = s
        .audit_events(&AuditFilter { capture: Some(ids[0].to_hex()), ..AuditFilter::default() })
        .unwrap();
    assert_eq!(on_capture.len(), 2, "one event per decision stored");

    let needs = QueueFilter { view: Some(QueueView::NeedsEntry(user.id)), ..all.clone() };
    assert_eq!(s.queue(&needs, 0, 10).unwrap().total, 3, "the rejected capture needs no entry");
    let values: BTreeMap<String, u64> = [("1".to_owned(), 10)].into();
    let entry = NewEntry {
        user_id: user.id,
        values: values.clone(),
        reason: None,
        resolution: false,
        at_ms: 40,
    };
    let pending = Transcription {
        precinct: "p1".into(),
        status: TranscriptionStatus::Pending,
        values: BTreeMap::new(),
        verified_at_ms: None,
        inconsistency_note: None,
    };
    let entry_audit = NewAudit {
        at_ms: 40,
        user_id: Some(user.id),
        action: "entry".into(),
        election: Some("e1".into()),
        precinct: Some("p1".into()),
        ..NewAudit::default()
    };
    s.append_entry("e1", "p1", 0, &entry, &pending, &entry_audit).unwrap();
    assert!(
        matches!(
            s.append_entry("e1", "p1", 0, &entry, &pending, &entry_audit),
            Err(StorageError::Conflict(_))
        ),
        "someone entered meanwhile"
    );
    assert_eq!(s.queue(&needs, 0, 10).unwrap().total, 2, "this user entered p1 already");
    let verified = Transcription {
        status: TranscriptionStatus::Verified,
        values: values.clone(),
        verified_at_ms: Some(41),
        inconsistency_note: Some("why".into()),
        ..pending.clone()
    };
    s.append_entry(
        "e1",
        "p1",
        1,
        &NewEntry { reason: Some("broken".into()), at_ms: 41, ..entry.clone() },
        &verified,
        &entry_audit,
    )
    .unwrap();
    let entries = s.entries("e1", "p1").unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        (entries[0].user_id, entries[0].user_name.as_str(), &entries[0].values, entries[0].at_ms),
        (user.id, "Coordinator", &values, 40)
    );
    assert_eq!(entries[1].reason.as_deref(), Some("broken"));
    assert!(entries[0].id < entries[1].id);
    assert_eq!(s.transcription("e1", "p1").unwrap(), Some(verified.clone()));
    assert_eq!(s.transcription("e1", "p2").unwrap(), None);
    assert_eq!(s.transcriptions("e1").unwrap(), [verified]);
    let statuses = s.transcription_statuses("e1", &["p1".into(), "p2".into()]).unwrap();
    assert_eq!(
        statuses.into_iter().collect::<Vec<_>>(),
        [("p1".to_owned(), TranscriptionStatus::Verified)]
    );
    let inconsistent = QueueFilter { view: Some(QueueView::Inconsistent), ..all.clone() };
    assert_eq!(s.queue(&inconsistent, 0, 10).unwrap().total, 2);
    let on_precinct = s
        .audit_events(&AuditFilter {
            precinct: Some(("e1".into(), "p1".into())),
            ..AuditFilter::default()
        })
        .unwrap();
    assert_eq!(on_precinct.len(), 2);
}

/// The console: invite batches with their audit events, cancellation (a cancelled code enrolls
/// nothing), the dashboard's tallies, the devices' summaries and audited revocation.
pub fn console(s: &(impl Backend + ?Sized)) {
    s.import_election(&election("e1"), 1).unwrap();
    let event = |batch: u64, codes: &NewInvites| NewAudit {
        at_ms: 3,
        action: "invites".into(),
        after: Some(format!("{batch}:{}", codes.len())),
        ..NewAudit::default()
    };
    let groups = [vec!["p1".to_owned()], vec!["p2".to_owned(), "p3".to_owned()]];
    let (first, codes) = s.create_invite_batch("e1", &groups, 2, 10, Some(&event)).unwrap();
    assert_eq!(codes.len(), 4);
    assert_eq!(codes.iter().filter(|(_, p)| p == &groups[1]).count(), 2);
    let (second, more) = s.create_invite_batch("e1", &groups[..1], 1, 20, None).unwrap();
    assert_eq!(second, first + 1);
    assert!(matches!(
        s.create_invite_batch("e1", &[vec!["p9".into()]], 1, 20, Some(&event)),
        Err(StorageError::NotFound(_))
    ));
    let events = s.audit_events(&AuditFilter::default()).unwrap();
    assert_eq!(
        events.iter().map(|e| e.after.clone()).collect::<Vec<_>>(),
        [Some(format!("{first}:4"))]
    );

    let listed = s.invites(None).unwrap();
    assert_eq!(listed.len(), 5);
    assert_eq!(listed[0].code, more[0].0, "newest first");
    assert_eq!(s.invites(Some(first)).unwrap().len(), 4);
    let one = s.invites(Some(second)).unwrap().remove(0);
    assert_eq!(
        (one.election.as_str(), one.precincts.clone(), one.batch, one.created_at_ms),
        ("e1", vec!["p1".to_owned()], Some(second), 20)
    );
    assert_eq!((one.used_by.clone(), one.cancelled_at_ms), (None, None));

    let cancel = NewAudit { at_ms: 30, action: "cancel".into(), ..NewAudit::default() };
    assert!(s.cancel_invite(&codes[0].0, 30, &cancel).unwrap());
    assert!(!s.cancel_invite(&codes[0].0, 31, &cancel).unwrap(), "cancelled already");
    assert!(!s.cancel_invite("NOPE", 31, &cancel).unwrap());
    assert_eq!(s.enroll(&codes[0].0, &key(1), 32).unwrap(), Err(EnrollRefusal::UnknownCode));
    let device = s.enroll(&codes[2].0, &key(1), 33).unwrap().expect("enrolled");
    assert!(!s.cancel_invite(&codes[2].0, 34, &cancel).unwrap(), "used already");
    let used = s.invites(Some(first)).unwrap().into_iter().find(|i| i.code == codes[2].0).unwrap();
    assert_eq!((used.used_by.as_deref(), used.used_at_ms), (Some(device.id.as_str()), Some(33)));
    assert_eq!(used.used_by_fingerprint, Some(key(1).fingerprint()));
    assert_eq!(
        s.invites(Some(first))
            .unwrap()
            .into_iter()
            .find(|i| i.code == codes[0].0)
            .unwrap()
            .cancelled_at_ms,
        Some(30)
    );

    for seq in [1, 2, 4] {
        let mut c = capture(&key(1), "e1", "p2", seq, &photo(seq, 20));
        c.received_at_ms = 3_600_000 * (seq / 2) + 5;
        s.commit_capture(c).unwrap().unwrap();
    }
    s.refresh_index().unwrap();
    let tally = |region: &str, precincts, photographed| RegionTally {
        region: region.into(),
        precincts,
        photographed,
        accepted: 0,
    };
    assert_eq!(s.region_tallies("e1").unwrap(), [tally("r1", 2, 1), tally("r2", 1, 0)]);
    let missing = s.stations_without_photo("e1", 50).unwrap();
    assert_eq!(
        missing.iter().map(|m| (m.region.as_str(), m.number)).collect::<Vec<_>>(),
        [("r1", 1), ("r2", 3)]
    );
    assert_eq!(s.stations_without_photo("e1", 0).unwrap(), Vec::<MissingStation>::new());
    assert_eq!(s.queue_depth("e1").unwrap(), 3);
    assert!(s.accepted_stations("e1").unwrap().is_empty(), "nothing accepted");
    assert_eq!(s.sequence_gaps(&device.id, 10).unwrap(), [(3, 3)]);
    s.record_refusal(&device.id, "device_revoked", 50).unwrap();
    s.record_refusal(&device.id, "device_revoked", 52).unwrap();
    s.record_refusal(&device.id, "photo_mismatch", 51).unwrap();
    s.record_refusal("not-enrolled", "device_unknown", 51).unwrap();
    let refusal = |code: &str, count, first_at_ms, last_at_ms| RefusalRecord {
        code: code.into(),
        count,
        first_at_ms,
        last_at_ms,
    };
    assert_eq!(
        s.device_refusals(&device.id).unwrap(),
        [refusal("device_revoked", 2, 50, 52), refusal("photo_mismatch", 1, 51, 51)]
    );
    assert!(s.device_refusals("not-enrolled").unwrap().is_empty(), "a stranger is not kept");
    assert_eq!(s.device_summary(&device.id).unwrap().map(|d| d.refusals), Some(3));
    assert_eq!(s.device_summary("nope").unwrap(), None);
    assert_eq!(s.captures_per_hour("e1", 10).unwrap(), [(0, 1), (1, 1), (2, 1)]);
    assert_eq!(s.captures_per_hour("e1", 2).unwrap(), [(1, 1), (2, 1)], "the newest hours");
    let summaries = s.device_summaries().unwrap();
    assert_eq!(summaries.len(), 1);
    let summary = &summaries[0];
    assert_eq!(summary.device.id, device.id);
    assert_eq!(
        (summary.captures, summary.last_sync_ms, summary.missing_seqs),
        (3, Some(7_200_005), 1)
    );
    assert_eq!(summary.states.get("new"), Some(&3));
    assert_eq!(summary.chain_gaps, 2, "seq 2 does not link to seq 1, seq 3 is missing");

    let revoke = NewAudit { at_ms: 40, action: "revoke".into(), ..NewAudit::default() };
    assert!(s.revoke_device_audited(&device.id, 40, &revoke).unwrap());
    assert!(!s.revoke_device_audited(&device.id, 41, &revoke).unwrap(), "revoked already");
    assert!(!s.revoke_device_audited("nope", 41, &revoke).unwrap());
    assert_eq!(s.devices().unwrap()[0].revoked_at_ms, Some(40));
    let actions: Vec<String> =
        s.audit_events(&AuditFilter::default()).unwrap().into_iter().map(|e| e.action).collect();
    assert_eq!(actions, ["invites", "cancel", "revoke"]);
}

/// The tests of every storage trait for one backend: `$open` answers
/// `Option<(storage, guard)>` for a fresh, empty storage.
macro_rules! storage_conformance_tests {
    ($open:expr) => {
        storage_conformance_tests!(@each $open;
            elections_and_admission, enrollment, uploads, commit_capture, log, gallery,
            accounts_and_sessions, review, console);
    };
    (@each $open:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let Some((storage, _guard)) = $open else { return };
                $crate::storage::conformance::$name(&storage);
            }
        )*
    };
}
pub(crate) use storage_conformance_tests;
