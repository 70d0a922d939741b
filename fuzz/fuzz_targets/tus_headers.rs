//! The tus request headers the server parses (the core's `tus`): `Upload-Metadata` and
//! `Upload-Checksum` round-trip through their encodings; `Upload-Length` and `Upload-Offset` are
//! read with `str::parse::<u64>`, whose accepted forms are pinned here (digits with an optional
//! `+`, nothing else). The input is lines: metadata, checksum, length.
#![no_main]

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hattama_core::tus::{parse_checksum_value, parse_metadata};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Header values reach the parsers only as visible ASCII (actix's `to_str`).
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let metadata = lines.next().unwrap_or_default();
    let checksum = lines.next().unwrap_or_default();
    let length = lines.next().unwrap_or_default();

    if let Ok(map) = parse_metadata(metadata) {
        let encoded: Vec<String> =
            map.iter().map(|(k, v)| format!("{k} {}", B64.encode(v))).collect();
        let again: HashMap<String, Vec<u8>> =
            parse_metadata(&encoded.join(",")).expect("encoded metadata parses");
        assert_eq!(again, map);
        assert!(map.keys().all(|k| !k.is_empty() && !k.contains(',') && !k.contains(' ')));
    }
    if let Ok(digest) = parse_checksum_value(checksum) {
        let encoded = format!("sha256 {}", B64.encode(digest));
        assert_eq!(parse_checksum_value(&encoded).expect("encoded checksum parses"), digest);
    }
    if let Ok(n) = length.parse::<u64>() {
        let digits = length.strip_prefix('+').unwrap_or(length);
        assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(digits.trim_start_matches('0').parse::<u64>().unwrap_or(0), n);
    }
});
