//! Photo checks and metadata stripping.
//!
//! A whitelist walker over the container's structure (JPEG segments, PNG chunks): it copies only
//! what decoding needs and drops everything else (EXIF with GPS and serials, XMP, IPTC, maker
//! notes, comments, embedded thumbnails, text chunks, trailers). It never decodes pixels, so the
//! cost is a copy plus a scan, and it allocates at most one output buffer no larger than its input.
//! Every size it reads is checked against [`MediaLimits`] before it is used.
//!
//! The same function is used by the client before hashing and by verifiers, which check that a
//! signed photo is already clean (`strip(photo) == photo`).

use crate::evidence::MediaType;

/// Hard limits on what a photo may be. The defaults fit any phone camera (up to ~200 MP sensors
/// save at most ~12k pixels a side) and refuse anything that claims more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaLimits {
    /// Most bytes a photo file may have.
    pub max_bytes: u64,
    /// Most pixels along either side.
    pub max_side: u32,
    /// Most pixels in all (width × height).
    pub max_pixels: u64,
    /// Most JPEG segments or PNG chunks.
    pub max_segments: u32,
}

impl Default for MediaLimits {
    fn default() -> Self {
        Self {
            max_bytes: 40 * 1024 * 1024,
            max_side: 16_384,
            max_pixels: 120_000_000,
            max_segments: 65_536,
        }
    }
}

/// Why a photo was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    /// Zero bytes.
    #[error("the file is empty")]
    Empty,
    /// HEIC/HEIF: phones save it by default, but it cannot be checked or stripped here.
    #[error("HEIC photos are not accepted: set the camera to save JPEG (\"Most compatible\")")]
    Heic,
    /// Neither JPEG nor PNG.
    #[error("not a JPEG or PNG photo")]
    UnknownFormat,
    /// More bytes than [`MediaLimits::max_bytes`].
    #[error("the photo is {actual} bytes; at most {limit} are accepted")]
    TooLarge {
        /// Size of the input.
        actual: u64,
        /// The limit.
        limit: u64,
    },
    /// The image claims more pixels than the limits allow.
    #[error("the image claims {width}×{height} pixels, more than the limits allow")]
    TooManyPixels {
        /// Claimed width.
        width: u32,
        /// Claimed height.
        height: u32,
    },
    /// More segments or chunks than [`MediaLimits::max_segments`].
    #[error("the file has too many segments")]
    TooManySegments,
    /// The file ends before its structure does.
    #[error("the file is truncated")]
    Truncated,
    /// Data after the image's end marker.
    #[error("the file has {bytes} bytes of data after the end of the image")]
    TrailingData {
        /// How many bytes follow the end marker.
        bytes: u64,
    },
    /// The structure is broken.
    #[error("the file is malformed: {0}")]
    Malformed(&'static str),
    /// Valid but of a kind this code does not accept (arithmetic-coded JPEG, JPEG-LS, ...).
    #[error("unsupported image: {0}")]
    Unsupported(&'static str),
}

/// A checked photo with its metadata removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CleanPhoto {
    /// The stripped bytes: what is hashed, signed, stored and published.
    pub bytes: Vec<u8>,
    /// JPEG or PNG.
    pub media_type: MediaType,
    /// Width in pixels as stored.
    pub width: u32,
    /// Height in pixels as stored.
    pub height: u32,
    /// EXIF orientation of the original (1 when absent or unreadable).
    pub orientation: u8,
    /// How many bytes of metadata were removed.
    pub removed_bytes: u64,
}

impl CleanPhoto {
    /// What a manifest says of this photo.
    pub fn info(&self) -> crate::evidence::PhotoInfo {
        crate::evidence::PhotoInfo {
            bytes: self.bytes.len() as u64,
            height: self.height,
            media_type: self.media_type,
            orientation: self.orientation,
            sha256: crate::evidence::Sha256Hash::of(&self.bytes),
            width: self.width,
        }
    }
}

/// Sniffs the format of `bytes` from its first bytes.
pub fn sniff(bytes: &[u8]) -> Result<MediaType, MediaError> {
    if bytes.is_empty() {
        return Err(MediaError::Empty);
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(MediaType::Jpeg);
    }
    if bytes.starts_with(PNG_SIGNATURE) {
        return Ok(MediaType::Png);
    }
    if is_heif(bytes) {
        return Err(MediaError::Heic);
    }
    Err(MediaError::UnknownFormat)
}

fn is_heif(bytes: &[u8]) -> bool {
    // ISO base media file: a `ftyp` box first, with a HEIF brand.
    if bytes.len() < 12 || &bytes[4..8] != b"ftyp" {
        return false;
    }
    let brand = &bytes[8..12];
    [b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif"]
        .iter()
        .any(|b| brand == *b)
}

/// Checks `bytes` against `limits` and returns the photo with its metadata stripped.
pub fn strip(bytes: &[u8], limits: &MediaLimits) -> Result<CleanPhoto, MediaError> {
    let (out, found) = walk(bytes, limits, Vec::with_capacity(bytes.len()))?;
    Ok(CleanPhoto {
        removed_bytes: (bytes.len() - out.len()) as u64,
        bytes: out,
        media_type: found.media_type,
        width: found.width,
        height: found.height,
        orientation: found.orientation,
    })
}

/// What [`check`] finds: what [`strip`] would say of the photo, without its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    /// JPEG or PNG.
    pub media_type: MediaType,
    /// Width in pixels as stored.
    pub width: u32,
    /// Height in pixels as stored.
    pub height: u32,
    /// EXIF orientation (1 when absent or unreadable).
    pub orientation: u8,
    /// Whether stripping would leave the bytes exactly as they are (the photo is clean).
    pub unchanged: bool,
}

/// The checks of [`strip`], without making the stripped copy: `check(b)` fails exactly when
/// `strip(b)` fails, and says `unchanged` exactly when `strip(b).bytes == b`. For a server that
/// must refuse any photo that is not clean, this costs no copy of the photo.
pub fn check(bytes: &[u8], limits: &MediaLimits) -> Result<Checked, MediaError> {
    let (same, found) = walk(bytes, limits, SameAs { input: bytes, len: 0, same: true })?;
    Ok(Checked {
        media_type: found.media_type,
        width: found.width,
        height: found.height,
        orientation: found.orientation,
        unchanged: same.same && same.len == bytes.len(),
    })
}

/// Where [`walk`] puts the parts of the photo it keeps, in order.
trait Output {
    fn put(&mut self, part: &[u8]);
}

impl Output for Vec<u8> {
    fn put(&mut self, part: &[u8]) {
        self.extend_from_slice(part);
    }
}

/// An [`Output`] that only tells whether the kept parts, one after another, are the input.
struct SameAs<'a> {
    input: &'a [u8],
    len: usize,
    same: bool,
}

impl Output for SameAs<'_> {
    fn put(&mut self, part: &[u8]) {
        let end = self.len + part.len();
        // A kept part is usually a slice of the input at this very place: then no byte needs
        // comparing.
        self.same = self.same
            && self
                .input
                .get(self.len..end)
                .is_some_and(|here| std::ptr::eq(here.as_ptr(), part.as_ptr()) || here == part);
        self.len = end;
    }
}

/// What a walk over a photo found, besides the kept bytes.
struct Found {
    media_type: MediaType,
    width: u32,
    height: u32,
    orientation: u8,
}

/// The one implementation of the photo checks and of stripping: walks the photo, checks it, and
/// puts the parts it keeps into `out`.
fn walk<O: Output>(bytes: &[u8], limits: &MediaLimits, out: O) -> Result<(O, Found), MediaError> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(MediaError::TooLarge { actual: bytes.len() as u64, limit: limits.max_bytes });
    }
    match sniff(bytes)? {
        MediaType::Jpeg => strip_jpeg(bytes, limits, out),
        MediaType::Png => strip_png(bytes, limits, out),
    }
}

fn check_pixels(width: u32, height: u32, limits: &MediaLimits) -> Result<(), MediaError> {
    if width == 0 || height == 0 {
        return Err(MediaError::Malformed("zero image size"));
    }
    if width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(MediaError::TooManyPixels { width, height });
    }
    Ok(())
}

/// Trailing bytes after the end marker are dropped only when they are padding (all 0x00 or all
/// 0xFF). Anything else is refused: a camera does not write it, and it can hide a second image.
fn check_trailer(trailer: &[u8]) -> Result<(), MediaError> {
    if trailer.iter().all(|&b| b == 0) || trailer.iter().all(|&b| b == 0xFF) {
        Ok(())
    } else {
        Err(MediaError::TrailingData { bytes: trailer.len() as u64 })
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?]))
}

fn strip_jpeg<O: Output>(
    input: &[u8],
    limits: &MediaLimits,
    mut out: O,
) -> Result<(O, Found), MediaError> {
    out.put(&input[..2]);
    let mut pos = 2;
    let mut segments = 0u32;
    let mut frame: Option<(u32, u32)> = None;
    let mut scans = 0u32;
    let mut orientation: Option<u8> = None;
    loop {
        // A marker: 0xFF, optional 0xFF fill bytes, then the code.
        if pos >= input.len() {
            return Err(MediaError::Truncated);
        }
        if input[pos] != 0xFF {
            return Err(MediaError::Malformed("expected a marker"));
        }
        while pos < input.len() && input[pos] == 0xFF {
            pos += 1;
        }
        let Some(&code) = input.get(pos) else {
            return Err(MediaError::Truncated);
        };
        let marker_start = pos - 1;
        pos += 1;
        segments += 1;
        if segments > limits.max_segments {
            return Err(MediaError::TooManySegments);
        }
        match code {
            0xD9 => {
                if frame.is_none() || scans == 0 {
                    return Err(MediaError::Malformed("no image data before the end marker"));
                }
                out.put(&input[pos - 2..pos]);
                check_trailer(&input[pos..])?;
                let (width, height) = frame.unwrap_or((0, 0));
                let orientation = orientation.unwrap_or(1);
                return Ok((
                    out,
                    Found { media_type: MediaType::Jpeg, width, height, orientation },
                ));
            }
            0xD8 => return Err(MediaError::Malformed("second start-of-image marker")),
            0x00 => return Err(MediaError::Malformed("stuffed byte outside entropy data")),
            0xD0..=0xD7 => return Err(MediaError::Malformed("restart marker outside a scan")),
            0x01 => continue, // TEM: no payload, nothing to keep.
            _ => {}
        }
        let len = be16(input, pos).ok_or(MediaError::Truncated)? as usize;
        if len < 2 {
            return Err(MediaError::Malformed("segment length below 2"));
        }
        let end = pos + len;
        if end > input.len() {
            return Err(MediaError::Truncated);
        }
        let payload = &input[pos + 2..end];
        match code {
            // Start of frame, Huffman (baseline, extended, progressive, lossless).
            0xC0..=0xC3 => {
                if frame.is_some() {
                    return Err(MediaError::Malformed("more than one frame header"));
                }
                if payload.len() < 6 {
                    return Err(MediaError::Malformed("short frame header"));
                }
                let height = u32::from(be16(payload, 1).unwrap_or(0));
                let width = u32::from(be16(payload, 3).unwrap_or(0));
                let components = payload[5] as usize;
                if !(1..=4).contains(&components) || payload.len() != 6 + 3 * components {
                    return Err(MediaError::Malformed("bad frame header"));
                }
                if height == 0 {
                    return Err(MediaError::Unsupported("height defined by a DNL marker"));
                }
                check_pixels(width, height, limits)?;
                frame = Some((width, height));
                out.put(&input[marker_start..end]);
                pos = end;
            }
            // Other processes: hierarchical, arithmetic coding, JPEG-LS and extensions.
            0xC5..=0xC7 | 0xC8..=0xCB | 0xCD..=0xCF | 0xF0..=0xFD => {
                return Err(MediaError::Unsupported("JPEG process other than Huffman DCT"));
            }
            // Tables and restart interval: needed to decode.
            0xC4 | 0xDB | 0xDD | 0xCC | 0xDC => {
                out.put(&input[marker_start..end]);
                pos = end;
            }
            0xDA => {
                if frame.is_none() {
                    return Err(MediaError::Malformed("scan before frame header"));
                }
                scans += 1;
                // Entropy-coded data runs to the first marker that is not a stuffed 0x00,
                // a restart marker or a fill byte.
                let data_end = scan_end(input, end).ok_or(MediaError::Truncated)?;
                out.put(&input[marker_start..data_end]);
                pos = data_end;
            }
            0xE1 => {
                if orientation.is_none() && payload.starts_with(b"Exif\0\0") {
                    orientation = Some(exif_orientation(&payload[6..]).unwrap_or(1));
                }
                pos = end;
            }
            // Adobe APP14: its transform flag decides how CMYK/YCCK and RGB data decode. It has
            // a fixed 12-byte layout with no room for personal data, so it is the one APPn kept.
            0xEE if payload.len() == 12 && payload.starts_with(b"Adobe") => {
                out.put(&input[marker_start..end]);
                pos = end;
            }
            // Every other APPn and COM: metadata, dropped.
            0xE0..=0xEF | 0xFE => pos = end,
            _ => return Err(MediaError::Malformed("reserved marker")),
        }
    }
}

/// Whether `x` then `y` start a marker inside entropy-coded data: `0xFF` followed by anything but
/// a stuffed `0x00`, a restart marker (`0xD0..=0xD7`) or another `0xFF` (a fill byte; the marker
/// is then at that next `0xFF`). As `u8` (0 or 1), so that a block of bytes is checked without
/// branches.
#[inline(always)]
fn starts_marker(x: u8, y: u8) -> u8 {
    u8::from(x == 0xFF) & u8::from(y != 0x00) & u8::from(y != 0xFF) & u8::from(y & 0xF8 != 0xD0)
}

/// Where the entropy-coded data starting at `from` ends: the position of the first marker in it
/// (see [`starts_marker`]), or `None` if it runs to the end of `input`. Camera photos have a
/// stuffed `0xFF 0x00` every hundred bytes or so, so this checks blocks of 64 bytes at once
/// (code the compiler vectorizes) and looks at single bytes only in the block holding the marker.
fn scan_end(input: &[u8], from: usize) -> Option<usize> {
    const BLOCK: usize = 64;
    let mut start = from;
    while start + BLOCK < input.len() {
        let block = &input[start..start + BLOCK];
        let next = &input[start + 1..start + BLOCK + 1];
        if block.iter().zip(next).fold(0, |hit, (&x, &y)| hit | starts_marker(x, y)) != 0 {
            break;
        }
        start += BLOCK;
    }
    (start..input.len().saturating_sub(1)).find(|&i| starts_marker(input[i], input[i + 1]) != 0)
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The PNG chunks kept: the critical ones and the ancillary ones that change how pixels look.
/// Text, time, EXIF, ICC profiles and private chunks are dropped.
const PNG_KEEP: [&[u8; 4]; 9] =
    [b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT"];

fn strip_png<O: Output>(
    input: &[u8],
    limits: &MediaLimits,
    mut out: O,
) -> Result<(O, Found), MediaError> {
    out.put(&input[..PNG_SIGNATURE.len()]);
    let mut pos = PNG_SIGNATURE.len();
    let mut segments = 0u32;
    let mut size: Option<(u32, u32)> = None;
    let mut seen_idat = false;
    let mut orientation: Option<u8> = None;
    loop {
        let len = be32(input, pos).ok_or(MediaError::Truncated)?;
        if len > 0x7FFF_FFFF {
            return Err(MediaError::Malformed("chunk length above 2^31-1"));
        }
        let len = len as usize;
        let kind: [u8; 4] = input
            .get(pos + 4..pos + 8)
            .ok_or(MediaError::Truncated)?
            .try_into()
            .map_err(|_| MediaError::Truncated)?;
        let end = pos + 12 + len;
        if end > input.len() {
            return Err(MediaError::Truncated);
        }
        segments += 1;
        if segments > limits.max_segments {
            return Err(MediaError::TooManySegments);
        }
        if !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err(MediaError::Malformed("bad chunk type"));
        }
        let data = &input[pos + 8..pos + 8 + len];
        let crc = be32(input, pos + 8 + len).ok_or(MediaError::Truncated)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&kind);
        hasher.update(data);
        if hasher.finalize() != crc {
            return Err(MediaError::Malformed("chunk checksum mismatch"));
        }
        if size.is_none() && &kind != b"IHDR" {
            return Err(MediaError::Malformed("first chunk is not IHDR"));
        }
        match &kind {
            b"IHDR" => {
                if size.is_some() {
                    return Err(MediaError::Malformed("second IHDR"));
                }
                if len != 13 {
                    return Err(MediaError::Malformed("IHDR length"));
                }
                let width = be32(data, 0).unwrap_or(0);
                let height = be32(data, 4).unwrap_or(0);
                let (depth, color, compression, filter, interlace) =
                    (data[8], data[9], data[10], data[11], data[12]);
                let depth_ok = match color {
                    0 => matches!(depth, 1 | 2 | 4 | 8 | 16),
                    3 => matches!(depth, 1 | 2 | 4 | 8),
                    2 | 4 | 6 => matches!(depth, 8 | 16),
                    _ => false,
                };
                if !depth_ok || compression != 0 || filter != 0 || interlace > 1 {
                    return Err(MediaError::Malformed("bad IHDR fields"));
                }
                if width > 0x7FFF_FFFF || height > 0x7FFF_FFFF {
                    return Err(MediaError::Malformed("IHDR size above 2^31-1"));
                }
                check_pixels(width, height, limits)?;
                size = Some((width, height));
            }
            b"IDAT" => seen_idat = true,
            b"eXIf" if orientation.is_none() => {
                orientation = Some(exif_orientation(data).unwrap_or(1));
            }
            _ => {}
        }
        let keep = PNG_KEEP.iter().any(|k| **k == kind);
        if !keep && kind[0].is_ascii_uppercase() {
            return Err(MediaError::Unsupported("unknown critical PNG chunk"));
        }
        if keep {
            out.put(&input[pos..end]);
        }
        pos = end;
        if &kind == b"IEND" {
            if !seen_idat {
                return Err(MediaError::Malformed("no image data"));
            }
            check_trailer(&input[pos..])?;
            let (width, height) = size.unwrap_or((0, 0));
            let orientation = orientation.unwrap_or(1);
            return Ok((out, Found { media_type: MediaType::Png, width, height, orientation }));
        }
    }
}

/// Reads the orientation tag (0x0112) of IFD0 from a TIFF-structured EXIF block. Returns `None`
/// for anything unreadable: a corrupt EXIF block must never stop a capture, it is dropped anyway.
pub fn exif_orientation(tiff: &[u8]) -> Option<u8> {
    let little = match tiff.get(0..4)? {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = [*tiff.get(at)?, *tiff.get(at + 1)?];
        Some(if little { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b = [*tiff.get(at)?, *tiff.get(at + 1)?, *tiff.get(at + 2)?, *tiff.get(at + 3)?];
        Some(if little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    let ifd = u32_at(4)? as usize;
    let count = u16_at(ifd)? as usize;
    for i in 0..count.min(1000) {
        let entry = ifd.checked_add(2 + 12 * i)?;
        if u16_at(entry)? == 0x0112 {
            // SHORT, count 1: the value sits in the first two bytes of the value field.
            if u16_at(entry + 2)? != 3 || u32_at(entry + 4)? != 1 {
                return None;
            }
            let value = u16_at(entry + 8)?;
            return (1..=8).contains(&value).then_some(value as u8);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny valid baseline JPEG, made by the `image` crate's encoder.
    pub(crate) fn tiny_jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    fn tiny_png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn segment(code: u8, payload: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, code];
        s.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        s.extend_from_slice(payload);
        s
    }

    fn exif_block(orientation: u16) -> Vec<u8> {
        let mut t = b"Exif\0\0MM\0*\0\0\0\x08".to_vec();
        t.extend_from_slice(&1u16.to_be_bytes());
        t.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]);
        t.extend_from_slice(&orientation.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        t
    }

    fn with_segments_after_soi(jpeg: &[u8], segs: &[Vec<u8>]) -> Vec<u8> {
        let mut v = jpeg[..2].to_vec();
        for s in segs {
            v.extend_from_slice(s);
        }
        v.extend_from_slice(&jpeg[2..]);
        v
    }

    fn check(input: &[u8], expected: Result<(), MediaError>) {
        let got = strip(input, &MediaLimits::default()).map(|_| ());
        assert_eq!(got, expected);
    }

    #[test]
    fn strips_app_segments_and_comments_and_keeps_pixels() {
        let plain = tiny_jpeg(33, 17);
        let dirty = with_segments_after_soi(
            &plain,
            &[
                segment(0xE1, &exif_block(6)),
                segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>GPS</x:xmpmeta>"),
                segment(0xED, b"Photoshop 3.0\0IPTC owner"),
                segment(0xFE, b"serial 12345"),
            ],
        );
        let clean = strip(&dirty, &MediaLimits::default()).unwrap();
        assert_eq!(clean.orientation, 6);
        assert_eq!((clean.width, clean.height), (33, 17));
        assert!(!clean.bytes.windows(6).any(|w| w == b"Exif\0\0"));
        assert!(!clean.bytes.windows(6).any(|w| w == b"serial"));
        let a = image::load_from_memory(&dirty).unwrap().to_rgb8();
        let b = image::load_from_memory(&clean.bytes).unwrap().to_rgb8();
        assert_eq!(a, b);
        // Stripping is idempotent: a clean photo is a fixed point.
        let again = strip(&clean.bytes, &MediaLimits::default()).unwrap();
        assert_eq!(again.bytes, clean.bytes);
        assert_eq!(again.removed_bytes, 0);
    }

    #[test]
    fn png_text_chunks_are_dropped() {
        let png = tiny_png(5, 4);
        // Insert a tEXt chunk after IHDR (8 + 25 bytes).
        let mut chunk = Vec::new();
        let data = b"Author\0Observer Name";
        chunk.extend_from_slice(&(data.len() as u32).to_be_bytes());
        chunk.extend_from_slice(b"tEXt");
        chunk.extend_from_slice(data);
        let mut h = crc32fast::Hasher::new();
        h.update(b"tEXt");
        h.update(data);
        chunk.extend_from_slice(&h.finalize().to_be_bytes());
        let mut dirty = png[..33].to_vec();
        dirty.extend_from_slice(&chunk);
        dirty.extend_from_slice(&png[33..]);
        let clean = strip(&dirty, &MediaLimits::default()).unwrap();
        assert_eq!(clean.bytes, strip(&png, &MediaLimits::default()).unwrap().bytes);
        assert_eq!(
            clean.removed_bytes,
            chunk.len() as u64 + (png.len() - clean.bytes.len()) as u64
        );
    }

    #[test]
    fn hostile_inputs() {
        let jpeg = tiny_jpeg(8, 8);
        check(b"", Err(MediaError::Empty));
        check(b"hello, this is text", Err(MediaError::UnknownFormat));
        check(&jpeg[..jpeg.len() / 2], Err(MediaError::Truncated));
        let mut trailer = jpeg.clone();
        trailer.extend_from_slice(b"PK\x03\x04 hidden zip");
        check(&trailer, Err(MediaError::TrailingData { bytes: 15 }));
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0; 64]);
        check(&padded, Ok(()));
        // Frame header claiming 65,500 × 65,500.
        let mut huge = jpeg.clone();
        let sof = huge.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        huge[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xDC, 0xFF, 0xDC]);
        check(&huge, Err(MediaError::TooManyPixels { width: 65500, height: 65500 }));
        let mut heic = vec![0, 0, 0, 24];
        heic.extend_from_slice(b"ftypheic\0\0\0\0mif1heic");
        check(&heic, Err(MediaError::Heic));
        let limits = MediaLimits { max_bytes: 100, ..MediaLimits::default() };
        assert_eq!(
            strip(&jpeg, &limits),
            Err(MediaError::TooLarge { actual: jpeg.len() as u64, limit: 100 })
        );
    }

    #[test]
    fn png_huge_ihdr_and_bad_crc() {
        let png = tiny_png(3, 3);
        let mut huge = png.clone();
        huge[16..24].copy_from_slice(&[0x7F, 0xFF, 0xFF, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF]);
        let crc = crc32fast::hash(&huge[12..29]);
        huge[29..33].copy_from_slice(&crc.to_be_bytes());
        check(&huge, Err(MediaError::TooManyPixels { width: 0x7FFF_FFFF, height: 0x7FFF_FFFF }));
        let mut bad = png.clone();
        bad[20] ^= 1;
        check(&bad, Err(MediaError::Malformed("chunk checksum mismatch")));
    }

    #[test]
    fn segment_count_is_bounded() {
        let jpeg = tiny_jpeg(8, 8);
        let coms: Vec<Vec<u8>> = (0..100).map(|_| segment(0xFE, b"x")).collect();
        let many = with_segments_after_soi(&jpeg, &coms);
        let limits = MediaLimits { max_segments: 50, ..MediaLimits::default() };
        assert_eq!(strip(&many, &limits), Err(MediaError::TooManySegments));
    }

    #[test]
    fn exif_orientation_reads_both_byte_orders_and_survives_garbage() {
        assert_eq!(exif_orientation(&exif_block(8)[6..]), Some(8));
        let le = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x03\0\0\0";
        assert_eq!(exif_orientation(le), Some(3));
        assert_eq!(exif_orientation(b"II*\0\xff\xff\xff\xff"), None);
        assert_eq!(exif_orientation(b""), None);
        assert_eq!(exif_orientation(&exif_block(77)[6..]), None);
    }

    /// `check` agrees with `strip`: the same error, or the same facts, with `unchanged` exactly
    /// when stripping changes nothing.
    fn agrees(input: &[u8]) -> Result<(), String> {
        let limits = MediaLimits::default();
        match (strip(input, &limits), super::check(input, &limits)) {
            (Ok(clean), Ok(checked)) => {
                let facts = (clean.media_type, clean.width, clean.height, clean.orientation);
                let found =
                    (checked.media_type, checked.width, checked.height, checked.orientation);
                if facts != found || checked.unchanged != (clean.bytes == input) {
                    return Err(format!(
                        "strip {facts:?} (unchanged: {}), check {checked:?}",
                        clean.bytes == input
                    ));
                }
                Ok(())
            }
            (Err(a), Err(b)) if a == b => Ok(()),
            (a, b) => Err(format!("strip {a:?}, check {b:?}")),
        }
    }

    /// Photos with and without metadata, fill bytes, comments and padding.
    fn variants() -> Vec<Vec<u8>> {
        let jpeg = tiny_jpeg(8, 8);
        let clean = strip(&jpeg, &MediaLimits::default()).unwrap().bytes;
        let mut padded = clean.clone();
        padded.extend_from_slice(&[0; 16]);
        let mut filled = clean.clone();
        filled.insert(2, 0xFF);
        let png = tiny_png(5, 4);
        let clean_png = strip(&png, &MediaLimits::default()).unwrap().bytes;
        vec![
            jpeg.clone(),
            clean.clone(),
            with_segments_after_soi(&clean, &[segment(0xE1, &exif_block(6))]),
            with_segments_after_soi(&clean, &[segment(0xFE, b"a comment")]),
            padded,
            filled,
            png,
            clean_png,
        ]
    }

    #[test]
    fn check_agrees_with_strip() {
        for (i, v) in variants().iter().enumerate() {
            agrees(v).unwrap_or_else(|e| panic!("variant {i}: {e}"));
        }
        let clean = strip(&tiny_jpeg(8, 8), &MediaLimits::default()).unwrap().bytes;
        assert!(super::check(&clean, &MediaLimits::default()).unwrap().unchanged);
        let dirty = with_segments_after_soi(&clean, &[segment(0xE1, &exif_block(6))]);
        assert!(!super::check(&dirty, &MediaLimits::default()).unwrap().unchanged);
    }

    /// The end of entropy-coded data as the byte-by-byte reading of ITU T.81 (B.1.1.5, F.1.2.3)
    /// finds it: the first `0xFF` not followed by a stuffed `0x00` or a restart marker, skipping
    /// fill bytes.
    fn scan_end_one_by_one(input: &[u8], mut p: usize) -> Option<usize> {
        loop {
            let i = p + input.get(p..)?.iter().position(|&b| b == 0xFF)?;
            match input.get(i + 1)? {
                0x00 | 0xD0..=0xD7 => p = i + 2,
                0xFF => p = i + 1,
                _ => return Some(i),
            }
        }
    }

    #[test]
    fn scan_end_finds_markers_after_stuffing_restarts_and_fill_bytes() {
        let mut data = vec![0x12; 300];
        data[10..12].copy_from_slice(&[0xFF, 0x00]);
        data[63..65].copy_from_slice(&[0xFF, 0xD3]);
        data[127] = 0xFF; // a fill byte across a block boundary, then the marker
        data[128..130].copy_from_slice(&[0xFF, 0xD9]);
        assert_eq!(scan_end(&data, 0), Some(128));
        assert_eq!(scan_end(&data, 129), None);
        assert_eq!(scan_end(&[0xFF], 0), None);
        assert_eq!(scan_end(&[0xFF, 0xD9], 0), Some(0));
        assert_eq!(scan_end(&[0xFF, 0xD9], 2), None);
    }

    proptest::proptest! {
        /// The block scan finds what the byte-by-byte reading finds, in data as dense in `0xFF`
        /// and markers as anything a camera writes.
        #[test]
        fn scan_end_agrees_with_reading_byte_by_byte(
            data in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<u8>(),
                    proptest::strategy::Just(0xFF),
                    proptest::strategy::Just(0x00),
                    0xD0u8..=0xD7,
                ],
                0..600,
            ),
            from in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let from = from.index(data.len() + 1);
            proptest::prop_assert_eq!(scan_end(&data, from), scan_end_one_by_one(&data, from));
        }

        /// Damaged photos (bytes changed, cut short) too: the checks are one walk.
        #[test]
        fn check_agrees_with_strip_on_damaged_photos(
            which in 0usize..8,
            edits in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
                0..4,
            ),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            truncate in proptest::prelude::any::<bool>(),
        ) {
            let mut v = variants().swap_remove(which);
            for (at, byte) in edits {
                let i = at.index(v.len());
                v[i] = byte;
            }
            if truncate {
                v.truncate(cut.index(v.len() + 1));
            }
            proptest::prop_assert!(agrees(&v).is_ok(), "{}", agrees(&v).unwrap_err());
        }
    }
}
