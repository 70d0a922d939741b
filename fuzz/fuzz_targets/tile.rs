//! Tiles: entry bundles (`log::parse_entry_bundle`) encode back to exactly their bytes, every
//! entry that parses (`LogEntry::from_bytes`) is canonical, hash tiles split into whole hashes;
//! a tile path the server accepts (`log::is_tile_path`) is exactly the path the core
//! writes for that tile (`log::tile_path`).
#![no_main]

use hattama_core::log::{LogEntry, entry_bundle, is_tile_path, parse_entry_bundle, tile_path};
use libfuzzer_sys::fuzz_target;
use tlog_tiles::Tile;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = parse_entry_bundle(data) {
        assert!(entries.len() <= 256);
        assert_eq!(entry_bundle(entries.iter().copied()), data);
        for raw in entries {
            if let Ok(e) = LogEntry::from_bytes(raw) {
                assert_eq!(e.to_bytes(), raw);
            }
        }
    }
    if let Ok(tail) = std::str::from_utf8(data)
        && is_tile_path(tail)
    {
        let tile = parse_tail(tail).expect("an accepted path names a tile");
        assert_eq!(tile_path(&tile), format!("tile/{tail}"));
    }
});

/// Reads a C2SP tile path after `tile/` (`<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`) loosely,
/// so that the assertion above, not this reader, decides whether the path is canonical.
fn parse_tail(tail: &str) -> Option<Tile> {
    let (main, width) = match tail.split_once(".p/") {
        Some((m, w)) => (m, w.parse::<u32>().ok()?),
        None => (tail, 256),
    };
    let mut parts = main.split('/');
    let level = parts.next()?;
    let (level, is_data) =
        if level == "entries" { (0, true) } else { (level.parse::<u8>().ok()?, false) };
    let mut n = 0u64;
    for group in parts {
        n = n.checked_mul(1000)?.checked_add(group.trim_start_matches('x').parse::<u64>().ok()?)?;
    }
    ((1..=256).contains(&width) && level < 64).then(|| Tile::new(8, level, n, width, is_data))
}
