//! Thumbnails (and any other reduced rendition) of stored photos, decoded in bounded memory.
//!
//! [`decode`] is the one decode of a photo's pixels, shared by the app's capture list and the
//! server's renditions. Before it allocates anything it works out, from the headers, an upper
//! bound of what the decode will allocate, and refuses ([`ThumbnailError::TooLarge`]) a photo
//! whose bound is above the caller's budget; so no accepted photo, however it is built, makes a
//! decode allocate more than that budget (plus the small rendition itself).
//!
//! - A JPEG is decoded at reduced scale (the IDCT itself scales by 1/2, 1/4 or 1/8), so a
//!   12-megapixel photo never becomes a 36 MB pixel buffer. A progressive JPEG needs all its
//!   coefficients at once (2 bytes per sample at full size); that is what the budget limits.
//! - A PNG is read row by row and averaged into bins as it is read (a box filter), so the decode
//!   holds a few rows and the reduced image, never the full image; only an interlaced PNG is
//!   held whole (at 8 bits per sample), within the budget.
//!
//! The result is resized to at most the requested side, turned upright by its EXIF orientation
//! and encoded as JPEG. On the phone this runs after a capture is stored, never on the capture's
//! critical path; the server makes thumbnails within its decode slots (`server/src/thumbs.rs`).

use std::io::Cursor;

use image::{DynamicImage, GrayImage, RgbImage, metadata::Orientation};

use crate::evidence::MediaType;

/// Longest side of a thumbnail, in pixels.
pub const MAX_SIDE: u32 = 320;

/// Longest side of the medium rendition (readable on a phone, a fraction of the original's
/// bytes), in pixels.
pub const MEDIUM_SIDE: u32 = 1280;

/// Most bytes one decode may allocate (the bound computed before decoding, see [`decode`]).
/// Phone cameras save baseline JPEGs, which need a few MB at reduced scale; a progressive JPEG
/// of about 20 megapixels (4:2:0) or a large interlaced PNG reaches it.
pub const DECODE_BUDGET: u64 = 64 << 20;

/// Why a photo's pixels could not be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ThumbnailError {
    /// Decoding it would allocate more than the budget.
    #[error(
        "decoding this photo would take {needed} bytes of memory; at most {budget} are allowed"
    )]
    TooLarge {
        /// The bound worked out from its headers.
        needed: u64,
        /// The budget.
        budget: u64,
    },
    /// Its pixel data is damaged or of a kind the decoder does not read.
    #[error("the photo's pixels cannot be decoded: {0}")]
    Undecodable(String),
}

fn undecodable(e: impl std::fmt::Display) -> ThumbnailError {
    ThumbnailError::Undecodable(e.to_string())
}

/// Decodes `photo` reduced to at least `target` pixels on its longest side (where it is that
/// large), allocating at most `budget` bytes for the decode itself (see the module docs).
pub fn decode(
    photo: &[u8],
    media_type: MediaType,
    target: u32,
    budget: u64,
) -> Result<DynamicImage, ThumbnailError> {
    match media_type {
        MediaType::Jpeg => decode_jpeg(photo, target, budget),
        MediaType::Png => decode_png(photo, target, budget),
    }
}

/// Decodes a JPEG at the smallest scale that still covers `target` pixels on its longest side,
/// within [`DECODE_BUDGET`].
pub fn decode_reduced(photo: &[u8], target: u32) -> Result<DynamicImage, ThumbnailError> {
    decode_jpeg(photo, target, DECODE_BUDGET)
}

fn check_budget(needed: u64, budget: u64) -> Result<(), ThumbnailError> {
    if needed > budget {
        return Err(ThumbnailError::TooLarge { needed, budget });
    }
    Ok(())
}

/// The sampling factors `(h, v)` of each component of a JPEG's frame header (read before any
/// scan; `None` if there is none).
fn jpeg_sampling(photo: &[u8]) -> Option<Vec<(u64, u64)>> {
    let mut pos = 2;
    loop {
        if *photo.get(pos)? != 0xFF {
            return None;
        }
        while *photo.get(pos)? == 0xFF {
            pos += 1;
        }
        let code = *photo.get(pos)?;
        pos += 1;
        if code == 0x01 || (0xD0..=0xD7).contains(&code) {
            continue;
        }
        let len = usize::from(u16::from_be_bytes([*photo.get(pos)?, *photo.get(pos + 1)?]));
        let payload = photo.get(pos + 2..pos + len)?;
        match code {
            0xC0..=0xC3 => {
                let count = usize::from(*payload.get(5)?);
                return (0..count)
                    .map(|i| {
                        let hv = *payload.get(6 + 3 * i + 1)?;
                        Some((u64::from(hv >> 4).max(1), u64::from(hv & 15).max(1)))
                    })
                    .collect();
            }
            0xDA | 0xD9 => return None,
            _ => pos += len,
        }
    }
}

/// An upper bound of what jpeg-decoder allocates to decode a frame of `w`×`h` with these
/// sampling factors to `sw`×`sh`: all coefficients of a progressive frame (64 × 2 bytes a
/// block), the full-size sample planes of a lossless one, and the components' reduced planes
/// and the output (counted twice, for the colour conversion).
fn jpeg_bound(
    (w, h): (u64, u64),
    (sw, sh): (u64, u64),
    sampling: &[(u64, u64)],
    process: jpeg_decoder::CodingProcess,
) -> u64 {
    let hmax = sampling.iter().map(|s| s.0).max().unwrap_or(1);
    let vmax = sampling.iter().map(|s| s.1).max().unwrap_or(1);
    let (mcu_x, mcu_y) = (w.div_ceil(8 * hmax), h.div_ceil(8 * vmax));
    let blocks: u64 = sampling.iter().map(|(sh_, sv)| mcu_x * sh_ * mcu_y * sv).sum();
    let comps = sampling.len() as u64;
    // Samples per block side after scaling: 8 at full size, down to 1 at 1/8.
    let per_side = (sw * 8).div_ceil(w.max(1)).clamp(1, 8).next_power_of_two();
    let output = 2 * sw * sh * comps.max(3);
    match process {
        jpeg_decoder::CodingProcess::DctProgressive => {
            blocks * 128 + blocks * per_side * per_side + output
        }
        jpeg_decoder::CodingProcess::Lossless => 2 * w * h * comps + 2 * 2 * w * h * comps,
        jpeg_decoder::CodingProcess::DctSequential => blocks * per_side * per_side + output,
    }
}

fn decode_jpeg(photo: &[u8], target: u32, budget: u64) -> Result<DynamicImage, ThumbnailError> {
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(photo));
    decoder.read_info().map_err(undecodable)?;
    let info = decoder.info().ok_or_else(|| undecodable("no frame header"))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let scale = (w.max(h) / target.max(1)).clamp(1, 8);
    let (rw, rh) = ((w / scale).max(1), (h / scale).max(1));
    let (sw, sh) = decoder.scale(rw as u16, rh as u16).map_err(undecodable)?;
    let (sw, sh) = (u32::from(sw), u32::from(sh));
    let sampling = jpeg_sampling(photo).ok_or_else(|| undecodable("no frame header"))?;
    if info.pixel_format == jpeg_decoder::PixelFormat::L16 {
        return Err(undecodable("16-bit JPEG"));
    }
    let needed = jpeg_bound(
        (u64::from(w), u64::from(h)),
        (u64::from(sw), u64::from(sh)),
        &sampling,
        info.coding_process,
    );
    check_budget(needed, budget)?;
    decoder.set_max_decoding_buffer_size(usize::try_from(budget).unwrap_or(usize::MAX));
    let pixels = decoder.decode().map_err(undecodable)?;
    let short = || undecodable("short buffer");
    let image = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => {
            DynamicImage::ImageLuma8(GrayImage::from_raw(sw, sh, pixels).ok_or_else(short)?)
        }
        jpeg_decoder::PixelFormat::RGB24 => {
            DynamicImage::ImageRgb8(RgbImage::from_raw(sw, sh, pixels).ok_or_else(short)?)
        }
        jpeg_decoder::PixelFormat::CMYK32 => {
            let rgb = pixels
                .chunks_exact(4)
                .flat_map(|p| {
                    let k = u16::from(p[3]);
                    [0, 1, 2].map(|i| ((u16::from(p[i]) * k) / 255) as u8)
                })
                .collect();
            DynamicImage::ImageRgb8(RgbImage::from_raw(sw, sh, rgb).ok_or_else(short)?)
        }
        jpeg_decoder::PixelFormat::L16 => return Err(undecodable("16-bit JPEG")),
    };
    Ok(image)
}

/// Sums of pixels sampled in each bin of a reduced image (a box filter over at most 4 × 4 evenly
/// spread samples a bin: a thumbnail needs no more, and a 120-megapixel image is then binned in
/// a few milliseconds rather than by visiting every pixel).
struct Bins {
    /// Source pixels per bin side.
    step: u32,
    width: u32,
    height: u32,
    /// Where the samples sit inside a bin, along each side.
    offsets: Vec<u32>,
    /// Red, green and blue sums per bin.
    sums: Vec<u32>,
    counts: Vec<u32>,
}

impl Bins {
    fn new(w: u32, h: u32, target: u32) -> Self {
        // Bins at least `target` a side where the image is that large (like the JPEG's scale).
        let step = (w.max(h) / target.max(1)).max(1);
        let (width, height) = (w.div_ceil(step), h.div_ceil(step));
        let n = width as usize * height as usize;
        let k = step.min(4);
        let offsets = (0..k).map(|i| (i * step + step / 2) / k).collect();
        Self { step, width, height, offsets, sums: vec![0; n * 3], counts: vec![0; n] }
    }

    fn bytes(w: u64, h: u64, target: u32) -> u64 {
        let step = (w.max(h) / u64::from(target.max(1))).max(1);
        w.div_ceil(step) * h.div_ceil(step) * (16 + 3)
    }

    /// Adds one row of 8-bit samples (`channels` a pixel: gray, gray+alpha, RGB or RGBA), if it
    /// is one of the sampled rows.
    fn add_row(&mut self, y: u32, row: &[u8], channels: usize) {
        let by = (y / self.step) as usize;
        if by >= self.height as usize || !self.offsets.contains(&(y % self.step)) {
            return;
        }
        let base = by * self.width as usize;
        for bx in 0..self.width as usize {
            for &off in &self.offsets {
                let x = bx * self.step as usize + off as usize;
                let Some(px) = row.get(x * channels..(x + 1) * channels) else { break };
                let (r, g, b) =
                    if channels < 3 { (px[0], px[0], px[0]) } else { (px[0], px[1], px[2]) };
                let i = base + bx;
                self.counts[i] += 1;
                self.sums[i * 3] += u32::from(r);
                self.sums[i * 3 + 1] += u32::from(g);
                self.sums[i * 3 + 2] += u32::from(b);
            }
        }
    }

    fn image(self) -> Result<DynamicImage, ThumbnailError> {
        let pixels = self
            .sums
            .chunks_exact(3)
            .zip(&self.counts)
            .flat_map(|(s, &c)| {
                let c = c.max(1);
                [0, 1, 2].map(|i| ((s[i] + c / 2) / c) as u8)
            })
            .collect();
        RgbImage::from_raw(self.width, self.height, pixels)
            .map(DynamicImage::ImageRgb8)
            .ok_or_else(|| undecodable("short buffer"))
    }
}

fn decode_png(photo: &[u8], target: u32, budget: u64) -> Result<DynamicImage, ThumbnailError> {
    let mut decoder = png::Decoder::new(Cursor::new(photo));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    decoder.set_limits(png::Limits { bytes: usize::try_from(budget).unwrap_or(usize::MAX) });
    let header = decoder.read_header_info().map_err(undecodable)?;
    let (w, h, interlaced) = (header.width, header.height, header.interlaced);
    let (w64, h64) = (u64::from(w), u64::from(h));
    // Two raw rows of up to 8 bytes a pixel (16-bit RGBA) and one output row of 4, the bins,
    // and for an interlaced image the whole image at 4 bytes a pixel.
    let mut needed = 2 * 8 * w64 + 4 * w64 + Bins::bytes(w64, h64, target);
    if interlaced {
        needed += 4 * w64 * h64;
    }
    check_budget(needed, budget)?;
    let mut reader = decoder.read_info().map_err(undecodable)?;
    let channels = reader.output_color_type().0.samples();
    let mut bins = Bins::new(w, h, target);
    if interlaced {
        let size = reader.output_buffer_size().ok_or_else(|| undecodable("image too large"))?;
        let mut whole = vec![0; size];
        let frame = reader.next_frame(&mut whole).map_err(undecodable)?;
        for (y, row) in whole.chunks_exact(frame.line_size).take(h as usize).enumerate() {
            bins.add_row(y as u32, row, channels);
        }
    } else {
        let mut y = 0;
        while let Some(row) = reader.next_row().map_err(undecodable)? {
            bins.add_row(y, row.data(), channels);
            y += 1;
        }
        if y != h {
            return Err(undecodable("the image data ends early"));
        }
    }
    bins.image()
}

/// Renders a stored photo reduced to at most `side` pixels on its longest side (never
/// enlarged), upright, as JPEG, decoding it within `budget` bytes ([`decode`]).
pub fn render(
    photo: &[u8],
    media_type: MediaType,
    orientation: u8,
    side: u32,
    budget: u64,
) -> Result<Vec<u8>, ThumbnailError> {
    let image = decode(photo, media_type, side, budget)?;
    // Reduced, never enlarged: a photo already within `side` keeps its pixels.
    let image =
        if image.width().max(image.height()) > side { image.thumbnail(side, side) } else { image };
    let mut upright = DynamicImage::ImageRgb8(image.into_rgb8());
    if let Some(o) = Orientation::from_exif(orientation) {
        upright.apply_orientation(o);
    }
    // Thumbnails at quality 80; larger renditions at 75, where small text stays legible.
    let quality = if side > MAX_SIDE { 75 } else { 80 };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&upright.into_rgb8())
        .map_err(undecodable)?;
    Ok(out)
}

/// Makes the thumbnail of a stored photo (at most [`MAX_SIDE`] a side, [`DECODE_BUDGET`]).
pub fn make(
    photo: &[u8],
    media_type: MediaType,
    orientation: u8,
) -> Result<Vec<u8>, ThumbnailError> {
    render(photo, media_type, orientation, MAX_SIDE, DECODE_BUDGET)
}
