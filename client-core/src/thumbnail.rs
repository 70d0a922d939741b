//! Thumbnails for the app's capture list.
//!
//! A JPEG is decoded at reduced scale (the IDCT itself scales by 1/2, 1/4 or 1/8), so a
//! 12-megapixel photo never becomes a 36 MB pixel buffer; the result is resized to at most
//! [`MAX_SIDE`] pixels, turned upright by its EXIF orientation and encoded as JPEG. This runs
//! after a capture is stored, never on the capture's critical path.

use std::io::Cursor;

use image::{DynamicImage, GrayImage, ImageDecoder, RgbImage, metadata::Orientation};

use crate::evidence::MediaType;
use crate::media::MediaLimits;

/// Longest side of a thumbnail, in pixels.
pub const MAX_SIDE: u32 = 320;

/// Longest side of the medium rendition (readable on a phone, a fraction of the original's
/// bytes), in pixels.
pub const MEDIUM_SIDE: u32 = 1280;

/// JPEG quality of thumbnails.
const THUMB_QUALITY: u8 = 80;

/// JPEG quality of the medium rendition: small text stays legible.
const MEDIUM_QUALITY: u8 = 75;

/// Decodes `photo` at the smallest scale that still covers `target` pixels on its longest side.
pub fn decode_reduced(photo: &[u8], target: u32) -> Result<DynamicImage, String> {
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(photo));
    decoder.read_info().map_err(|e| e.to_string())?;
    let info = decoder.info().ok_or("no frame header")?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let scale = (w.max(h) / target.max(1)).clamp(1, 8);
    let (rw, rh) = ((w / scale).max(1), (h / scale).max(1));
    let (sw, sh) = decoder.scale(rw as u16, rh as u16).map_err(|e| e.to_string())?;
    let pixels = decoder.decode().map_err(|e| e.to_string())?;
    let (sw, sh) = (u32::from(sw), u32::from(sh));
    let image = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => {
            DynamicImage::ImageLuma8(GrayImage::from_raw(sw, sh, pixels).ok_or("short buffer")?)
        }
        jpeg_decoder::PixelFormat::RGB24 => {
            DynamicImage::ImageRgb8(RgbImage::from_raw(sw, sh, pixels).ok_or("short buffer")?)
        }
        jpeg_decoder::PixelFormat::CMYK32 => {
            let rgb = pixels
                .chunks_exact(4)
                .flat_map(|p| {
                    let k = u16::from(p[3]);
                    [0, 1, 2].map(|i| ((u16::from(p[i]) * k) / 255) as u8)
                })
                .collect();
            DynamicImage::ImageRgb8(RgbImage::from_raw(sw, sh, rgb).ok_or("short buffer")?)
        }
        jpeg_decoder::PixelFormat::L16 => return Err("16-bit JPEG".into()),
    };
    Ok(image)
}

/// Makes the thumbnail of a stored photo (at most [`MAX_SIDE`] pixels a side).
pub fn make(
    photo: &[u8],
    media_type: MediaType,
    orientation: u8,
    limits: &MediaLimits,
) -> Result<Vec<u8>, String> {
    make_at(photo, media_type, orientation, limits, MAX_SIDE, THUMB_QUALITY)
}

/// Makes the medium rendition of a stored photo (at most [`MEDIUM_SIDE`] pixels a side; a
/// smaller photo keeps its size), by the same decoding as the thumbnail.
pub fn make_medium(
    photo: &[u8],
    media_type: MediaType,
    orientation: u8,
    limits: &MediaLimits,
) -> Result<Vec<u8>, String> {
    make_at(photo, media_type, orientation, limits, MEDIUM_SIDE, MEDIUM_QUALITY)
}

/// A reduced, upright JPEG of at most `max_side` pixels a side.
fn make_at(
    photo: &[u8],
    media_type: MediaType,
    orientation: u8,
    limits: &MediaLimits,
    max_side: u32,
    quality: u8,
) -> Result<Vec<u8>, String> {
    let image = match media_type {
        MediaType::Jpeg => decode_reduced(photo, max_side)?,
        MediaType::Png => {
            let mut decoder = image::codecs::png::PngDecoder::new(Cursor::new(photo))
                .map_err(|e| e.to_string())?;
            let mut l = image::Limits::default();
            l.max_image_width = Some(limits.max_side);
            l.max_image_height = Some(limits.max_side);
            l.max_alloc = Some(limits.max_pixels.saturating_mul(8));
            decoder.set_limits(l).map_err(|e| e.to_string())?;
            DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?
        }
    };
    let mut thumb = if image.width().max(image.height()) > max_side {
        image.thumbnail(max_side, max_side).into_rgb8()
    } else {
        image.into_rgb8()
    };
    let mut upright = DynamicImage::ImageRgb8(std::mem::take(&mut thumb));
    if let Some(o) = Orientation::from_exif(orientation) {
        upright.apply_orientation(o);
    }
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&upright.into_rgb8())
        .map_err(|e| e.to_string())?;
    Ok(out)
}
