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

use std::cell::Cell;
use std::io::{Cursor, Read};
use std::ops::Range;
use std::rc::Rc;

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
        MediaType::Jpeg => decode_jpeg_lenient(photo, target, budget),
        MediaType::Png => decode_png(photo, target, budget),
    }
}

/// Whether a JPEG's decode at `target` fits `budget`, from its headers alone (no pixel is
/// decoded): the only reason [`decode`] refuses a JPEG, since its damaged pixel data is
/// rendered leniently. A server checks this at upload instead of decoding the photo. A JPEG
/// whose headers the decoder cannot read at all is rendered grey, so it fits.
pub fn jpeg_fits(photo: &[u8], target: u32, budget: u64) -> Result<(), ThumbnailError> {
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(photo));
    if decoder.read_info().is_err() {
        return Ok(());
    }
    let Some(info) = decoder.info() else { return Ok(()) };
    let Some(sampling) = jpeg_sampling(photo) else { return Ok(()) };
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let scale = (w.max(h) / target.max(1)).clamp(1, 8);
    let (rw, rh) = ((w / scale).max(1), (h / scale).max(1));
    let Ok((sw, sh)) = decoder.scale(rw as u16, rh as u16) else { return Ok(()) };
    check_budget(
        jpeg_bound(
            (u64::from(w), u64::from(h)),
            (u64::from(sw), u64::from(sh)),
            &sampling,
            info.coding_process,
        ),
        budget,
    )
}

/// A reader over a photo that records how far the decoder has read it.
struct Tracked<'a> {
    bytes: &'a [u8],
    pos: Rc<Cell<usize>>,
}

impl Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let at = self.pos.get().min(self.bytes.len());
        let n = buf.len().min(self.bytes.len() - at);
        buf[..n].copy_from_slice(&self.bytes[at..at + n]);
        self.pos.set(at + n);
        Ok(n)
    }
}

/// Decodes a JPEG as browsers and libjpeg show a damaged one: where its coded data cannot be
/// decoded, the scan is cut a little before that point and completed with the restart markers
/// it still expects and its end, so the decoder fills the rest with the tables' first codes
/// (the image continues in the last colour decoded); a JPEG even that cannot decode is rendered
/// flat grey at its aspect ratio. So every JPEG whose headers fit the budget ([`jpeg_fits`])
/// yields an image, decoded in the same bounded memory as an intact one.
fn decode_jpeg_lenient(
    photo: &[u8],
    target: u32,
    budget: u64,
) -> Result<DynamicImage, ThumbnailError> {
    let pos = Rc::new(Cell::new(0));
    match decode_jpeg(Tracked { bytes: photo, pos: pos.clone() }, photo, target, budget) {
        Err(ThumbnailError::Undecodable(_)) => {}
        decoded => return decoded,
    }
    if let Some((cut, rest)) = jpeg_repair(photo, pos.get()) {
        let repaired = Cursor::new(&photo[..cut]).chain(Cursor::new(rest));
        match decode_jpeg(repaired, photo, target, budget) {
            Err(ThumbnailError::Undecodable(_)) => {}
            decoded => return decoded,
        }
    }
    let (w, h) = jpeg_frame(photo).map_or((1, 1), |f| (f.width, f.height));
    let scale = (w.max(h) / target.max(1)).max(1);
    let (gw, gh) = ((w / scale).clamp(1, target.max(1)), (h / scale).clamp(1, target.max(1)));
    Ok(DynamicImage::ImageRgb8(RgbImage::from_pixel(gw, gh, image::Rgb([128, 128, 128]))))
}

/// What [`jpeg_repair`] needs of a JPEG's frame header.
struct JpegFrame {
    width: u32,
    height: u32,
    /// Component id and sampling factors `(h, v)`.
    components: Vec<(u8, u32, u32)>,
}

/// The frame header of a JPEG, if it has one before its first scan.
fn jpeg_frame(photo: &[u8]) -> Option<JpegFrame> {
    let (_, payload, _) =
        jpeg_segments(photo).take_while(|s| s.0 != 0xDA).find(|s| (0xC0..=0xC3).contains(&s.0))?;
    let payload = photo.get(payload)?;
    let height = u32::from(u16::from_be_bytes([*payload.get(1)?, *payload.get(2)?]));
    let width = u32::from(u16::from_be_bytes([*payload.get(3)?, *payload.get(4)?]));
    let count = usize::from(*payload.get(5)?);
    let components = (0..count)
        .map(|i| {
            let c = payload.get(6 + 3 * i..8 + 3 * i)?;
            Some((c[0], u32::from(c[1] >> 4).max(1), u32::from(c[1] & 15).max(1)))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(JpegFrame { width, height, components })
}

/// The marker segments of a JPEG in order: marker code, where its payload is and, for a scan,
/// where its entropy-coded data ends (the offset of the next marker; else the payload's end).
/// Stops at the end marker or at anything malformed.
fn jpeg_segments(photo: &[u8]) -> impl Iterator<Item = (u8, Range<usize>, usize)> {
    let mut pos = 2;
    std::iter::from_fn(move || {
        let code = loop {
            if *photo.get(pos)? != 0xFF {
                return None;
            }
            while *photo.get(pos)? == 0xFF {
                pos += 1;
            }
            let code = *photo.get(pos)?;
            pos += 1;
            // Markers without a segment.
            if code != 0x01 && !(0xD0..=0xD7).contains(&code) {
                break code;
            }
        };
        if code == 0xD9 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([*photo.get(pos)?, *photo.get(pos + 1)?]));
        let payload = pos + 2..pos + len.max(2);
        pos = payload.end;
        if code == 0xDA {
            // Entropy-coded data: up to a marker other than a stuffed byte or a restart.
            while pos + 1 < photo.len()
                && !(photo[pos] == 0xFF
                    && photo[pos + 1] != 0
                    && !(0xD0..=0xD7).contains(&photo[pos + 1]))
            {
                pos += 1;
            }
        }
        Some((code, payload, pos))
    })
}

/// Where to cut a JPEG whose decode failed after reading `failed_at` bytes, and what to put
/// after the cut (see [`decode_jpeg_lenient`]): the scan is cut 16 bytes before the point the
/// decoder had read to (its bit buffer holds at most 8 bytes), never inside its header or a
/// stuffed byte, and followed by the restart markers the rest of the scan expects and the end
/// marker. `None` if the failure is not inside a scan.
fn jpeg_repair(photo: &[u8], failed_at: usize) -> Option<(usize, Vec<u8>)> {
    let frame = jpeg_frame(photo)?;
    let mut interval = 0u64;
    let mut found = None;
    for (code, payload, end) in jpeg_segments(photo) {
        match code {
            0xDD => {
                let p = photo.get(payload)?;
                interval = u64::from(u16::from_be_bytes([*p.first()?, *p.get(1)?]));
            }
            0xDA if payload.end <= failed_at => found = Some((payload, end, interval)),
            _ => {}
        }
    }
    let (header, end, interval) = found?;
    let start = header.end;
    let mut cut = failed_at.min(end).saturating_sub(16).max(start);
    while cut > start && photo[cut - 1] == 0xFF {
        cut -= 1;
    }
    let mut rest = Vec::new();
    let expected = (interval > 0)
        .then(|| scan_mcus(&frame, photo.get(header)?))
        .flatten()
        .and_then(|mcus| mcus.saturating_sub(1).checked_div(interval));
    if let Some(expected) = expected {
        let seen = photo[start..cut]
            .windows(2)
            .filter(|w| w[0] == 0xFF && (0xD0..=0xD7).contains(&w[1]))
            .count() as u64;
        // At most one marker per MCU: bounded by the image's size.
        for i in seen..expected {
            rest.extend([0xFF, 0xD0 + (i % 8) as u8]);
        }
    }
    rest.extend([0xFF, 0xD9]);
    Some((cut, rest))
}

/// The MCUs of a scan as jpeg-decoder counts them: an interleaved scan covers the frame's MCUs;
/// a scan of one component covers its blocks, within the image's blocks.
fn scan_mcus(frame: &JpegFrame, header: &[u8]) -> Option<u64> {
    let hmax = frame.components.iter().map(|c| c.1).max()?;
    let vmax = frame.components.iter().map(|c| c.2).max()?;
    let (w, h) = (u64::from(frame.width), u64::from(frame.height));
    let mcu_w = w.div_ceil(8 * u64::from(hmax));
    let mcu_h = h.div_ceil(8 * u64::from(vmax));
    let count = *header.first()?;
    if count > 1 {
        return Some(mcu_w * mcu_h);
    }
    let id = *header.get(1)?;
    let (_, ch, cv) = frame.components.iter().find(|c| c.0 == id)?;
    Some((mcu_w * u64::from(*ch)).min(w.div_ceil(8)) * (mcu_h * u64::from(*cv)).min(h.div_ceil(8)))
}

/// Decodes a JPEG at the smallest scale that still covers `target` pixels on its longest side,
/// within [`DECODE_BUDGET`].
pub fn decode_reduced(photo: &[u8], target: u32) -> Result<DynamicImage, ThumbnailError> {
    decode_jpeg_lenient(photo, target, DECODE_BUDGET)
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
    let frame = jpeg_frame(photo)?;
    Some(frame.components.iter().map(|c| (u64::from(c.1), u64::from(c.2))).collect())
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

/// Decodes a JPEG read from `reader` (`photo`, or a repaired copy of it with the same headers).
fn decode_jpeg(
    reader: impl Read,
    photo: &[u8],
    target: u32,
    budget: u64,
) -> Result<DynamicImage, ThumbnailError> {
    let mut decoder = jpeg_decoder::Decoder::new(reader);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{self, MediaLimits};

    /// A textured colour JPEG (image's encoder: baseline, standard tables).
    fn textured(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (y * 5) as u8, ((x ^ y) * 3) as u8])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
            .encode_image(&img)
            .unwrap();
        out
    }

    /// Where a JPEG's first scan's entropy-coded data begins and ends.
    fn scan_data(jpeg: &[u8]) -> Range<usize> {
        let (_, header, end) = jpeg_segments(jpeg).find(|s| s.0 == 0xDA).unwrap();
        header.end..end
    }

    /// The mean absolute difference of two images' samples over their top `rows`.
    fn top_difference(a: &DynamicImage, b: &DynamicImage, rows: u32) -> f64 {
        let (a, b) = (a.to_rgb8(), b.to_rgb8());
        assert_eq!(a.dimensions(), b.dimensions());
        let (mut sum, mut n) = (0f64, 0f64);
        for y in 0..rows {
            for x in 0..a.width() {
                for c in 0..3 {
                    sum += f64::from(a.get_pixel(x, y)[c].abs_diff(b.get_pixel(x, y)[c]));
                    n += 1.0;
                }
            }
        }
        sum / n
    }

    /// A JPEG whose coded data stops decoding near its end (a run of ones, which no standard
    /// Huffman table defines) is rendered as far as it decodes: the top of its thumbnail is the
    /// intact photo's, not a grey stand-in; and the walker accepts it.
    #[test]
    fn a_damaged_jpeg_is_rendered_as_far_as_it_decodes() {
        let intact = textured(640, 480);
        let data = scan_data(&intact);
        let mut damaged = intact.clone();
        let at = data.start + (data.end - data.start) * 9 / 10;
        for pair in damaged[at..at + 16].chunks_exact_mut(2) {
            pair.copy_from_slice(&[0xFF, 0x00]);
        }
        media::check(&damaged, &MediaLimits::default()).expect("the walker accepts it");
        assert!(
            decode_jpeg(Cursor::new(&damaged), &damaged, MAX_SIDE, DECODE_BUDGET).is_err(),
            "the strict decode fails on it"
        );
        let good = decode(&intact, MediaType::Jpeg, MAX_SIDE, DECODE_BUDGET).unwrap();
        let got = decode(&damaged, MediaType::Jpeg, MAX_SIDE, DECODE_BUDGET).unwrap();
        let grey = DynamicImage::ImageRgb8(RgbImage::from_pixel(
            got.width(),
            got.height(),
            image::Rgb([128, 128, 128]),
        ));
        let rows = got.height() / 2;
        let (near, far) = (top_difference(&got, &good, rows), top_difference(&grey, &good, rows));
        assert!(near < 2.0 && far > 20.0, "difference to the intact photo {near}, grey {far}");
        make(&damaged, MediaType::Jpeg, 1).unwrap();
    }

    /// Cut after `n` bytes of its entropy-coded data, with the restart markers its scan still
    /// expects: what `jpeg_repair` appends is what the decoder asks for, for every cut.
    #[test]
    fn the_repair_completes_the_restart_markers_a_scan_expects() {
        // A flat grey JPEG, 1 component, 4 x 3 blocks, a restart after every block: each block
        // is one byte (DC "0", end-of-block "0", padded with ones) and a marker.
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x43, 0x00];
        j.extend([1u8; 64]);
        j.extend([0xFF, 0xC0, 0x00, 0x0B, 8, 0, 24, 0, 32, 1, 1, 0x11, 0]);
        for class in [0x00, 0x10] {
            j.extend([0xFF, 0xC4, 0x00, 0x14, class, 1]);
            j.extend([0u8; 15]);
            j.push(0);
        }
        j.extend([0xFF, 0xDD, 0x00, 0x04, 0x00, 0x01]);
        j.extend([0xFF, 0xDA, 0x00, 0x08, 1, 1, 0x00, 0, 63, 0]);
        let start = j.len();
        for i in 0..12u8 {
            j.push(0x3F);
            if i < 11 {
                j.extend([0xFF, 0xD0 + i % 8]);
            }
        }
        j.extend([0xFF, 0xD9]);
        media::check(&j, &MediaLimits::default()).expect("a valid JPEG");
        decode_jpeg(Cursor::new(&j), &j, MAX_SIDE, DECODE_BUDGET).expect("it decodes");
        for failed_at in start..j.len() {
            let (cut, rest) = jpeg_repair(&j, failed_at + 16).unwrap();
            let mut repaired = j[..cut].to_vec();
            repaired.extend(rest);
            decode_jpeg(Cursor::new(&repaired), &repaired, MAX_SIDE, DECODE_BUDGET)
                .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Every JPEG the walker accepts yields a thumbnail, however its coded data is damaged.
        #[test]
        fn every_jpeg_the_walker_accepts_yields_a_thumbnail(
            edits in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
                1..12,
            ),
            side in 8u32..120,
        ) {
            let mut jpeg = textured(side * 3 / 2, side);
            let data = scan_data(&jpeg);
            for (at, byte) in edits {
                jpeg[data.start + at.index(data.end - data.start)] = byte;
            }
            if media::check(&jpeg, &MediaLimits::default()).is_ok() {
                jpeg_fits(&jpeg, MAX_SIDE, DECODE_BUDGET).unwrap();
                let thumb = make(&jpeg, MediaType::Jpeg, 1);
                proptest::prop_assert!(thumb.is_ok(), "{thumb:?}");
            }
        }
    }
}
