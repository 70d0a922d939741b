//! The thumbnailer, on every photo the walker accepts (the server thumbnails only those): it
//! never panics, a thumbnail it makes is a JPEG of at most `MAX_SIDE` pixels a side, and a JPEG
//! whose headers fit the decode budget (`jpeg_fits`, what the server checks at upload) always
//! yields one, however damaged its pixel data.
#![no_main]

use hattama_core::media::MediaLimits;
use hattama_core::thumbnail;
use image::ImageDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = MediaLimits::default();
    let Some(checked) = hattama_fuzz::strip_and_check(data, &limits) else { return };
    let made = thumbnail::make(data, checked.media_type, checked.orientation);
    if checked.media_type == hattama_core::evidence::MediaType::Jpeg
        && thumbnail::jpeg_fits(data, thumbnail::MAX_SIDE, thumbnail::DECODE_BUDGET).is_ok()
    {
        assert!(made.is_ok(), "a JPEG whose headers fit yields a thumbnail: {made:?}");
    }
    if let Ok(thumb) = made {
        let decoder = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(&thumb))
            .expect("a thumbnail is a JPEG");
        let (w, h) = decoder.dimensions();
        assert!((1..=thumbnail::MAX_SIDE).contains(&w) && (1..=thumbnail::MAX_SIDE).contains(&h));
    }
});
