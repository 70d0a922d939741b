//! The official-results CSV (`hattama_core::official`, the server's import): checked against a fixed election, an
//! accepted file's figures written back with `to_csv` parse to the same figures, and they differ
//! from themselves in nothing.
#![no_main]

use std::sync::LazyLock;

use hattama_core::election::Election;
use hattama_core::official;
use libfuzzer_sys::fuzz_target;

static ELECTION: LazyLock<Election> =
    LazyLock::new(|| Election::from_json(hattama_fuzz::ELECTION_JSON).expect("the seed election"));

fuzz_target!(|data: &[u8]| {
    let _ = official::election_of(data);
    let Ok(figures) = official::parse(data, &ELECTION) else { return };
    assert!(!figures.is_empty());
    let csv = official::to_csv(&ELECTION.id, &figures);
    assert_eq!(official::parse(&csv, &ELECTION).expect("to_csv output parses"), figures);
    assert_eq!(official::election_of(&csv).expect("names its election"), ELECTION.id);
    assert!(official::changes(2, &figures, &figures).is_empty());
});
