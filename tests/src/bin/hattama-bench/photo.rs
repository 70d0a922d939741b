//! The bench photo: a protocol form on a wooden table, with sensor noise and a camera's EXIF
//! block, rendered deterministically so that every run measures the same bytes.

use anyhow::{Context, Result, bail, ensure};
use image::{Rgb, RgbImage};

/// Photo geometry: a 12-megapixel 4:3 sensor.
pub const WIDTH: u32 = 4000;
pub const HEIGHT: u32 = 3000;
/// Target photo size and the tolerance the generator must meet.
const TARGET_BYTES: f64 = 4.0 * 1024.0 * 1024.0;
const TOLERANCE: f64 = 0.25;

/// A small deterministic generator (SplitMix64): the photo is the same on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

const PAPER: u8 = 0;
const PRINT: u8 = 1;
const PEN: u8 = 2;

/// Where ink is: one byte per pixel (`PAPER`, `PRINT` or `PEN`).
struct Ink {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Ink {
    fn rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, kind: u8) {
        let (x0, x1) = (x0.max(0.0) as usize, (x1 as usize).min(self.w));
        let (y0, y1) = (y0.max(0.0) as usize, (y1 as usize).min(self.h));
        for y in y0..y1 {
            self.px[y * self.w + x0..y * self.w + x1.max(x0)].fill(kind);
        }
    }

    fn dot(&mut self, cx: f32, cy: f32, r: f32, kind: u8) {
        let (ys, ye) = ((cy - r).floor().max(0.0) as usize, ((cy + r).ceil() as usize).min(self.h));
        let (xs, xe) = ((cx - r).floor().max(0.0) as usize, ((cx + r).ceil() as usize).min(self.w));
        for y in ys..ye {
            for x in xs..xe {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                if dx * dx + dy * dy <= r * r {
                    self.px[y * self.w + x] = kind;
                }
            }
        }
    }

    fn stroke(&mut self, (x0, y0): (f32, f32), (x1, y1): (f32, f32), width: f32, kind: u8) {
        let steps = (x1 - x0).hypot(y1 - y0).ceil().max(1.0) as usize;
        for s in 0..=steps {
            let f = s as f32 / steps as f32;
            self.dot(x0 + (x1 - x0) * f, y0 + (y1 - y0) * f, width / 2.0, kind);
        }
    }

    /// A glyph-like shape: a few strokes between points of a 3×5 grid in the box.
    fn glyph(&mut self, rng: &mut SplitMix, cell: [f32; 4], width: f32, kind: u8) {
        let [x, y, w, h] = cell;
        let jitter = if kind == PEN { w * 0.12 } else { 0.0 };
        let slant = if kind == PEN { 0.2 } else { 0.0 };
        let point = |rng: &mut SplitMix| {
            let gx = (rng.next() % 3) as f32 / 2.0;
            let gy = (rng.next() % 5) as f32 / 4.0;
            let px = x + gx * w + (1.0 - gy) * h * slant + rng.range(-jitter, jitter);
            (px, y + gy * h + rng.range(-jitter, jitter))
        };
        let strokes = 2 + rng.next() % 3;
        let mut from = point(rng);
        for _ in 0..strokes {
            let to = point(rng);
            self.stroke(from, to, width, kind);
            from = if rng.next().is_multiple_of(3) { point(rng) } else { to };
        }
    }

    /// A line of words from `x0` to at most `x1`, glyph height `h`.
    fn text(
        &mut self,
        rng: &mut SplitMix,
        (x0, x1): (f32, f32),
        y: f32,
        h: f32,
        width: f32,
        kind: u8,
    ) {
        let gw = h * 0.6;
        let mut x = x0;
        while x + gw < x1 {
            let letters = 2 + rng.next() % 8;
            for _ in 0..letters {
                if x + gw >= x1 {
                    break;
                }
                self.glyph(rng, [x, y, gw, h], width, kind);
                x += gw * 1.25;
            }
            x += gw * 1.2;
        }
    }
}

/// Draws the protocol: title, a table of numbered lines with printed labels, handwritten
/// numbers and words, and signatures.
fn draw_protocol(ink: &mut Ink, rng: &mut SplitMix, page: (f32, f32, f32, f32)) {
    let (px0, py0, px1, py1) = page;
    let cx = (px0 + px1) / 2.0;
    for (i, (half, h)) in [(900.0, 52.0), (700.0, 40.0), (1100.0, 30.0)].into_iter().enumerate() {
        let y = py0 + 90.0 + i as f32 * 85.0;
        ink.text(rng, (cx - half, cx + half), y, h, 6.0, PRINT);
    }
    let (tx0, tx1, ty0, row) = (px0 + 110.0, px1 - 110.0, py0 + 380.0, 78.0);
    let cols = [tx0, tx0 + 140.0, tx0 + 2200.0, tx0 + 2650.0, tx1];
    let rows = ((py1 - 330.0 - ty0) / row) as usize;
    let ty1 = ty0 + rows as f32 * row;
    for r in 0..=rows {
        let y = ty0 + r as f32 * row;
        ink.rect(tx0, y, tx1, y + 3.0, PRINT);
    }
    for &x in &cols {
        ink.rect(x, ty0, x + 3.0, ty1 + 3.0, PRINT);
    }
    for r in 0..rows {
        let y = ty0 + r as f32 * row + 22.0;
        ink.text(rng, (cols[0] + 25.0, cols[0] + 110.0), y, 34.0, 4.0, PRINT);
        let label_end = cols[1] + rng.range(900.0, 2000.0);
        ink.text(rng, (cols[1] + 25.0, label_end), y, 30.0, 3.5, PRINT);
        let number_end = cols[2] + rng.range(150.0, 380.0);
        ink.text(rng, (cols[2] + 40.0, number_end), y - 8.0, 48.0, 5.0, PEN);
        let words_end = cols[4] - rng.range(30.0, 300.0);
        ink.text(rng, (cols[3] + 30.0, words_end), y - 6.0, 44.0, 4.5, PEN);
    }
    // Signature lines and signatures.
    for i in 0..3 {
        let x = px0 + 200.0 + i as f32 * 1100.0;
        let y = ty1 + 170.0;
        ink.text(rng, (x, x + 350.0), y - 10.0, 30.0, 3.5, PRINT);
        ink.rect(x + 420.0, y + 30.0, x + 950.0, y + 33.0, PRINT);
        let mut from = (x + 450.0, y + 10.0);
        for _ in 0..12 {
            let to = (from.0 + rng.range(10.0, 60.0), y + rng.range(-40.0, 30.0));
            ink.stroke(from, to, 4.0, PEN);
            from = to;
        }
    }
}

/// Renders the scene: a sheet of paper on a wooden table, unevenly lit, with sensor noise.
fn render(seed: u64, noise: f32) -> RgbImage {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut rng = SplitMix(seed);
    let page = (260.0, 110.0, 3760.0, 2900.0);
    let mut ink = Ink { w, h, px: vec![PAPER; w * h] };
    draw_protocol(&mut ink, &mut rng, page);
    let mut rng = SplitMix(seed ^ 0xA5A5);
    let tri =
        |r: u64, amp: f32| ((r & 0xFF) as f32 + ((r >> 8) & 0xFF) as f32 - 255.0) / 255.0 * amp;
    RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let (xf, yf) = (x as f32, y as f32);
        let r = rng.next();
        let luma_noise = tri(r, noise);
        let (cr, cb) = (tri(r >> 16, noise / 3.0), tri(r >> 32, noise / 3.0));
        let on_page = xf >= page.0 && xf < page.2 && yf >= page.1 && yf < page.3;
        let base: [f32; 3] = if on_page {
            // Light falls off towards the corners and from left to right.
            let (dx, dy) = ((xf - 2000.0) / 2000.0, (yf - 1500.0) / 1500.0);
            let light = 232.0 - 28.0 * (dx * dx + dy * dy) - 10.0 * (xf / 4000.0);
            match ink.px[y as usize * w + x as usize] {
                PRINT => [42.0, 41.0, 46.0],
                PEN => [38.0, 52.0, 138.0],
                _ => [light + 5.0, light, light - 9.0],
            }
        } else {
            // Wood grain: bands along x with a slow wobble.
            let grain = (yf * 0.045 + (xf * 0.004).sin() * 6.0).sin() * 14.0;
            [112.0 + grain, 80.0 + grain * 0.8, 56.0 + grain * 0.6]
        };
        let px = |v: f32| v.clamp(0.0, 255.0) as u8;
        Rgb([
            px(base[0] + luma_noise + cr),
            px(base[1] + luma_noise),
            px(base[2] + luma_noise + cb),
        ])
    })
}

/// Makes the photo: renders the scene, encodes it at the quality that lands within the
/// tolerance of the target size, and inserts the EXIF block after SOI. Returns the photo, the
/// quality and the length of the APP1 segment.
pub fn make_photo() -> Result<(Vec<u8>, u8, usize)> {
    let image = render(0x4A77_A3A0, 9.0);
    let thumb = image::imageops::thumbnail(&image, 160, 120);
    let mut thumb_jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut thumb_jpeg, 92).encode_image(&thumb)?;
    let app1 = exif_app1(&thumb_jpeg)?;
    // The size falls as quality falls: step towards the target, keep the closest.
    let mut quality = 92u8;
    let mut best: Option<(f64, u8, Vec<u8>)> = None;
    let mut tried = Vec::new();
    while tried.len() < 8 && !tried.contains(&quality) {
        let mut jpeg = Vec::with_capacity(TARGET_BYTES as usize * 2);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality)
            .encode_image(&image)?;
        tried.push(quality);
        let off = (jpeg.len() + app1.len()) as f64 / TARGET_BYTES - 1.0;
        let next = if off.abs() > 0.5 {
            6
        } else if off.abs() > 0.15 {
            2
        } else {
            1
        };
        let next = if off > 0.0 { quality.saturating_sub(next) } else { quality + next };
        if best.as_ref().is_none_or(|(b, _, _)| off.abs() < b.abs()) {
            best = Some((off, quality, jpeg));
        }
        if off.abs() <= 0.05 {
            break;
        }
        quality = next.clamp(50, 98);
    }
    let (off, quality, jpeg) = best.context("no photo encoded")?;
    ensure!(off.abs() <= TOLERANCE, "no quality in {tried:?} gives a photo near 4 MiB");
    let mut photo = Vec::with_capacity(jpeg.len() + app1.len());
    photo.extend_from_slice(&jpeg[..2]);
    photo.extend_from_slice(&app1);
    photo.extend_from_slice(&jpeg[2..]);
    Ok((photo, quality, app1.len()))
}

/// Offset of the first quantization table's 64 entries (8-bit precision) in `jpeg`.
pub fn first_quant_table(jpeg: &[u8]) -> Result<usize> {
    let mut pos = 2;
    while pos + 4 <= jpeg.len() && jpeg[pos] == 0xFF {
        let code = jpeg[pos + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
        if code == 0xDB {
            ensure!(jpeg[pos + 4] >> 4 == 0, "the first quantization table is not 8-bit");
            return Ok(pos + 5);
        }
        ensure!(code != 0xDA, "no quantization table before the scan");
        pos += 2 + len;
    }
    bail!("no quantization table found")
}

/// Makes variant `i` of the photo: the two highest-frequency entries of the first quantization
/// table encode `i`. The photo stays a valid JPEG of the same size and structure.
pub fn make_variant(photo: &mut [u8], table: usize, i: usize) {
    photo[table + 63] = 1 + (i % 255) as u8;
    photo[table + 62] = 1 + (i / 255 % 255) as u8;
}

/// A TIFF value for an EXIF entry (big-endian).
enum Val {
    Bytes(Vec<u8>),
    Ascii(&'static str),
    Short(u16),
    Long(u32),
    Rationals(Vec<(u32, u32)>),
    Undefined(Vec<u8>),
}

impl Val {
    fn kind_count_bytes(&self) -> (u16, u32, Vec<u8>) {
        match self {
            Val::Bytes(b) => (1, b.len() as u32, b.clone()),
            Val::Ascii(s) => {
                let mut b = s.as_bytes().to_vec();
                b.push(0);
                (2, b.len() as u32, b)
            }
            Val::Short(v) => (3, 1, v.to_be_bytes().to_vec()),
            Val::Long(v) => (4, 1, v.to_be_bytes().to_vec()),
            Val::Rationals(v) => {
                let b = v.iter().flat_map(|(n, d)| [n.to_be_bytes(), d.to_be_bytes()]).flatten();
                (5, v.len() as u32, b.collect())
            }
            Val::Undefined(b) => (7, b.len() as u32, b.clone()),
        }
    }
}

/// Serialized length of an IFD with its out-of-line values.
fn ifd_len(entries: &[(u16, Val)]) -> usize {
    let data: usize = entries
        .iter()
        .map(|(_, v)| v.kind_count_bytes().2.len())
        .filter(|&n| n > 4)
        .map(|n| n + n % 2)
        .sum();
    2 + 12 * entries.len() + 4 + data
}

/// Appends an IFD at TIFF offset `out.len() - base`, its values after it.
fn write_ifd(out: &mut Vec<u8>, base: usize, entries: &[(u16, Val)], next: u32) {
    let start = out.len() - base;
    let mut data_at = start + 2 + 12 * entries.len() + 4;
    let mut data = Vec::new();
    out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
    for (tag, val) in entries {
        let (kind, count, mut bytes) = val.kind_count_bytes();
        out.extend_from_slice(&tag.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        if bytes.len() <= 4 {
            bytes.resize(4, 0);
            out.extend_from_slice(&bytes);
        } else {
            out.extend_from_slice(&(data_at as u32).to_be_bytes());
            if bytes.len() % 2 == 1 {
                bytes.push(0);
            }
            data_at += bytes.len();
            data.extend_from_slice(&bytes);
        }
    }
    out.extend_from_slice(&next.to_be_bytes());
    out.extend_from_slice(&data);
}

/// A camera-like EXIF APP1 segment: IFD0 (camera, orientation, dates), the EXIF IFD (exposure,
/// a maker note), the GPS IFD (position to the metre) and IFD1 with a JPEG thumbnail.
fn exif_app1(thumb: &[u8]) -> Result<Vec<u8>> {
    let mut rng = SplitMix(7);
    let maker_note: Vec<u8> = (0..14_000).map(|_| rng.next() as u8).collect();
    let mut ifd0 = vec![
        (0x010F, Val::Ascii("Samsung")),
        (0x0110, Val::Ascii("Galaxy A54 5G")),
        (0x0112, Val::Short(1)),
        (0x011A, Val::Rationals(vec![(72, 1)])),
        (0x011B, Val::Rationals(vec![(72, 1)])),
        (0x0128, Val::Short(2)),
        (0x0131, Val::Ascii("A546BXXU8CXK1")),
        (0x0132, Val::Ascii("2026:10:26 21:40:17")),
        (0x0213, Val::Short(1)),
        (0x8769, Val::Long(0)),
        (0x8825, Val::Long(0)),
    ];
    let exif = vec![
        (0x829A, Val::Rationals(vec![(1, 50)])),
        (0x829D, Val::Rationals(vec![(18, 10)])),
        (0x8827, Val::Short(400)),
        (0x9000, Val::Undefined(b"0231".to_vec())),
        (0x9003, Val::Ascii("2026:10:26 21:40:17")),
        (0x9004, Val::Ascii("2026:10:26 21:40:17")),
        (0x9010, Val::Ascii("+04:00")),
        (0x9101, Val::Undefined(vec![1, 2, 3, 0])),
        (0x920A, Val::Rationals(vec![(554, 100)])),
        (0x927C, Val::Undefined(maker_note)),
        (0xA000, Val::Undefined(b"0100".to_vec())),
        (0xA001, Val::Short(1)),
        (0xA002, Val::Long(WIDTH)),
        (0xA003, Val::Long(HEIGHT)),
        (0xA420, Val::Ascii("R12XLLJ00MM R12XLLJ00MM R12XLLJ00MM")),
    ];
    let gps = vec![
        (0x0000, Val::Bytes(vec![2, 2, 0, 0])),
        (0x0001, Val::Ascii("N")),
        (0x0002, Val::Rationals(vec![(41, 1), (42, 1), (3_217, 100)])),
        (0x0003, Val::Ascii("E")),
        (0x0004, Val::Rationals(vec![(44, 1), (47, 1), (4_862, 100)])),
        (0x0006, Val::Rationals(vec![(49_120, 100)])),
        (0x001D, Val::Ascii("2026:10:26")),
    ];
    let mut ifd1 = vec![
        (0x0103, Val::Short(6)),
        (0x011A, Val::Rationals(vec![(72, 1)])),
        (0x011B, Val::Rationals(vec![(72, 1)])),
        (0x0128, Val::Short(2)),
        (0x0201, Val::Long(0)),
        (0x0202, Val::Long(thumb.len() as u32)),
    ];
    let exif_at = 8 + ifd_len(&ifd0);
    let gps_at = exif_at + ifd_len(&exif);
    let ifd1_at = gps_at + ifd_len(&gps);
    let thumb_at = ifd1_at + ifd_len(&ifd1);
    ifd0[9].1 = Val::Long(exif_at as u32);
    ifd0[10].1 = Val::Long(gps_at as u32);
    ifd1[4].1 = Val::Long(thumb_at as u32);

    let mut seg = vec![0xFF, 0xE1, 0, 0];
    seg.extend_from_slice(b"Exif\0\0");
    let base = seg.len();
    seg.extend_from_slice(b"MM\0*\0\0\0\x08");
    write_ifd(&mut seg, base, &ifd0, ifd1_at as u32);
    write_ifd(&mut seg, base, &exif, 0);
    write_ifd(&mut seg, base, &gps, 0);
    write_ifd(&mut seg, base, &ifd1, 0);
    ensure!(seg.len() - base == thumb_at, "EXIF layout is off");
    seg.extend_from_slice(thumb);
    let len = u16::try_from(seg.len() - 2).context("EXIF block above 64 KB")?;
    seg[2..4].copy_from_slice(&len.to_be_bytes());
    Ok(seg)
}
