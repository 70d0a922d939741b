//! Synthetic photos of posted result protocols: a sheet of paper on a wall, the precinct's
//! number, every protocol line with its number, a stamp and some sensor noise. Each photo is
//! different (the noise comes from a seed), so each has its own hash, as real photos do.

use std::collections::BTreeMap;

use hattama_core::election::ProtocolTemplate;
use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};

/// What the sheet shows.
pub struct Sheet<'a> {
    /// First line of the heading.
    pub title: &'a str,
    /// The precinct's official number.
    pub precinct_number: u32,
    /// The template whose lines are printed.
    pub template: &'a ProtocolTemplate,
    /// The values written on the sheet (lines without a value are left blank).
    pub values: &'a BTreeMap<String, u64>,
    /// Page n of m.
    pub page: (u32, u32),
}

/// Renders the sheet as a JPEG of `width` × `height` pixels (4:3 portrait works best).
pub fn protocol_photo(sheet: &Sheet<'_>, width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let wall = Rgb([96 + rng.gen_range(0..40), 110 + rng.gen_range(0..30), 120]);
    let mut img = RgbImage::from_pixel(width, height, wall);
    // The paper, a little off-centre, as a hand-held photo would be.
    let (mx, my) = (width / 14 + rng.gen_range(0..width / 40 + 1), height / 18);
    let (pw, ph) = (width - 2 * mx, height - 2 * my);
    fill(&mut img, mx, my, pw, ph, Rgb([244, 242, 232]));
    let scale = (pw / 170).max(1);
    let mut y = my + 4 * scale;
    let left = mx + 5 * scale;
    let line = |img: &mut RgbImage, text: &str, y: u32, s: u32| {
        text_at(img, left, y, s, text, Rgb([20, 20, 30]));
    };
    line(&mut img, &sheet.title.to_uppercase(), y, scale + scale / 2);
    y += 12 * scale;
    line(&mut img, &format!("PRECINCT NO. {}", sheet.precinct_number), y, scale);
    y += 9 * scale;
    line(&mut img, &format!("PAGE {}/{}", sheet.page.0, sheet.page.1), y, scale);
    y += 12 * scale;
    let rows = &sheet.template.lines;
    let per_page = rows.len().div_ceil(sheet.page.1.max(1) as usize).max(1);
    let first = per_page * (sheet.page.0.saturating_sub(1) as usize);
    let number_x = mx + pw - 40 * scale;
    for l in rows.iter().skip(first).take(per_page) {
        if y + 9 * scale > my + ph {
            break;
        }
        let name: String = l.names.en.to_uppercase().chars().take(24).collect();
        line(&mut img, &format!("{} {}", l.id, name), y, scale);
        if let Some(v) = sheet.values.get(&l.id) {
            text_at(&mut img, number_x, y, scale, &v.to_string(), Rgb([10, 30, 120]));
        }
        fill(&mut img, left, y + 8 * scale, pw - 10 * scale, (scale / 3).max(1), Rgb([180; 3]));
        y += 11 * scale;
    }
    // The commission's round stamp.
    let (cx, cy, r) = (mx + pw - 35 * scale, my + ph - 30 * scale, 18 * scale);
    ring(&mut img, cx, cy, r, (scale / 2).max(1) + 1, Rgb([70, 70, 170]));
    // Sensor noise.
    for p in img.pixels_mut() {
        let n: i16 = rng.gen_range(-6..=6);
        for c in p.0.iter_mut() {
            *c = (i16::from(*c) + n).clamp(0, 255) as u8;
        }
    }
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for a valid RGB image.
    let _ = JpegEncoder::new_with_quality(&mut out, 82).encode_image(&img);
    out
}

fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, color: Rgb<u8>) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, color);
        }
    }
}

fn ring(img: &mut RgbImage, cx: u32, cy: u32, r: u32, width: u32, color: Rgb<u8>) {
    let (r_out, r_in) = ((r * r) as i64, ((r - width.min(r)) * (r - width.min(r))) as i64);
    for y in cy.saturating_sub(r)..(cy + r).min(img.height()) {
        for x in cx.saturating_sub(r)..(cx + r).min(img.width()) {
            let d = (x as i64 - cx as i64).pow(2) + (y as i64 - cy as i64).pow(2);
            if d <= r_out && d >= r_in {
                img.put_pixel(x, y, color);
            }
        }
    }
}

/// Draws `text` with a 5×7 font, each font pixel `scale` × `scale`; unknown characters are
/// left blank.
fn text_at(img: &mut RgbImage, x: u32, y: u32, scale: u32, text: &str, color: Rgb<u8>) {
    for (i, ch) in text.chars().enumerate() {
        let Some(rows) = glyph(ch) else { continue };
        let gx = x + i as u32 * 6 * scale;
        for (ry, bits) in rows.iter().enumerate() {
            for rx in 0..5u32 {
                if bits & (0x10 >> rx) != 0 {
                    fill(img, gx + rx * scale, y + ry as u32 * scale, scale, scale, color);
                }
            }
        }
    }
}

fn glyph(ch: char) -> Option<[u8; 7]> {
    const DIGITS: [[u8; 7]; 10] = [
        [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
    ];
    const LETTERS: [[u8; 7]; 26] = [
        [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
    ];
    Some(match ch {
        '0'..='9' => DIGITS[ch as usize - '0' as usize],
        'A'..='Z' => LETTERS[ch as usize - 'A' as usize],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_are_valid_jpegs_that_the_core_accepts_and_differ_by_seed() {
        let election = crate::demo::election(3, 0).unwrap();
        let values = crate::demo::protocol_values(&election.protocol, 7);
        let sheet = Sheet {
            title: "Demo",
            precinct_number: 12,
            template: &election.protocol,
            values: &values,
            page: (1, 1),
        };
        let a = protocol_photo(&sheet, 300, 400, 1);
        let b = protocol_photo(&sheet, 300, 400, 2);
        assert_ne!(a, b);
        let limits = hattama_core::media::MediaLimits::default();
        let clean = hattama_core::media::strip(&a, &limits).expect("the core accepts it");
        assert_eq!((clean.info().width, clean.info().height), (300, 400));
    }
}
