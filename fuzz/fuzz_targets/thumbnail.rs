//! The thumbnailer, on every photo the walker accepts (the server thumbnails only those): it
//! never panics, and a thumbnail it makes is a JPEG of at most `MAX_SIDE` pixels a side.
#![no_main]

use hattama_core::media::MediaLimits;
use hattama_core::thumbnail;
use image::ImageDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = MediaLimits::default();
    let Some(checked) = hattama_fuzz::strip_and_check(data, &limits) else { return };
    if let Ok(thumb) = thumbnail::make(data, checked.media_type, checked.orientation) {
        let decoder = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(&thumb))
            .expect("a thumbnail is a JPEG");
        let (w, h) = decoder.dimensions();
        assert!((1..=thumbnail::MAX_SIDE).contains(&w) && (1..=thumbnail::MAX_SIDE).contains(&h));
    }
});
