//! What the fuzz targets share: the fixed keys their inputs are signed with (`keys.rs`), the
//! election of the official-results target, and the properties checked on photos, which the
//! JPEG, PNG and thumbnail targets all hold.

use hattama_core::media::{self, MediaLimits};

mod keys;
pub use keys::*;

/// The election the official-results target checks its CSV against (the example of
/// `docs/election-format.md`, completed).
pub const ELECTION_JSON: &[u8] = include_bytes!("../election.json");

/// Strips and checks `data` as the client and the server do, and holds the walker's promises:
/// `check` fails exactly when `strip` fails (with the same error) and says `unchanged` exactly
/// when `strip` changes nothing; a stripped photo is never larger, passes again unchanged
/// (`strip` is idempotent: verifiers rely on a signed photo being a fixed point) with the same
/// type and size. Returns what `check` found, for the thumbnail target.
pub fn strip_and_check(data: &[u8], limits: &MediaLimits) -> Option<media::Checked> {
    let stripped = media::strip(data, limits);
    let checked = media::check(data, limits);
    match (stripped, checked) {
        (Ok(s), Ok(c)) => {
            assert_eq!(c.unchanged, s.bytes == data, "check and strip disagree on unchanged");
            assert_eq!(
                (c.media_type, c.width, c.height, c.orientation),
                (s.media_type, s.width, s.height, s.orientation),
                "check and strip disagree on what the photo is"
            );
            assert!(s.bytes.len() <= data.len(), "strip made the photo larger");
            assert_eq!(s.removed_bytes, (data.len() - s.bytes.len()) as u64);
            assert_eq!(media::sniff(data).ok(), Some(s.media_type));
            let again = media::strip(&s.bytes, limits).expect("a stripped photo must pass again");
            assert_eq!(again.bytes, s.bytes, "strip is not idempotent");
            assert_eq!(
                (again.media_type, again.width, again.height),
                (s.media_type, s.width, s.height)
            );
            let c2 = media::check(&s.bytes, limits).expect("a stripped photo must check");
            assert!(c2.unchanged, "check says a stripped photo would change");
            Some(c)
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "check and strip refuse for different reasons");
            None
        }
        (s, c) => panic!("strip {:?} but check {:?}", s.map(|s| s.bytes.len()), c),
    }
}
