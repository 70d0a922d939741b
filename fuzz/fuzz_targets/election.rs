//! The election definition import (`Election::from_json`, what `hattama-server election import`
//! and enrollment read): an accepted definition encodes to JSON that is accepted again as the same
//! election, and the template's check runs on any figures without panicking.
#![no_main]

use std::collections::BTreeMap;

use hattama_core::election::Election;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(e) = Election::from_json(data) else { return };
    let json = serde_json::to_vec(&e).expect("an election encodes");
    assert_eq!(Election::from_json(&json).expect("its encoding is accepted"), e);
    for p in &e.precincts {
        assert_eq!(e.precinct(&p.id).map(|q| &q.id), Some(&p.id));
    }
    // Figures from the input's bytes, extreme values included.
    let values: BTreeMap<String, u64> = e
        .protocol
        .lines
        .iter()
        .zip(data.iter().cycle())
        .map(|(l, b)| (l.id.clone(), if *b == 0xFF { u64::MAX } else { u64::from(*b) }))
        .collect();
    for v in e.protocol.check(&values) {
        assert!(e.protocol.relations.iter().any(|r| r.id == v.relation));
    }
});
