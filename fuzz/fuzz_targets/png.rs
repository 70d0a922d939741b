//! The PNG walker of `media`: strip and check agree, and strip is idempotent.
#![no_main]

use hattama_core::media::MediaLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hattama_fuzz::strip_and_check(data, &MediaLimits::default());
});
