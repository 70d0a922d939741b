//! Photos an attacker would send: valid in structure (they pass the core's `media::check`) but
//! built to make a decoder allocate as much as the limits allow, and damaged variants of them.
//! Built by hand, row by row, so that making them takes little memory in the test itself.

use std::io::Write;

/// A 16-bit RGB PNG of `w`×`h` (flat grey), compressed with zlib's best ratio (a 16,384 ×
/// 7,324 one is about a megabyte). With `damaged`, the image data stream is cut before its end,
/// so its last rows cannot be decoded (the chunk checksums stay valid).
pub fn png16(w: u32, h: u32, damaged: bool) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Sixteen);
        encoder.set_compression(png::Compression::High);
        encoder.set_filter(png::Filter::NoFilter);
        let mut writer = encoder.write_header().expect("png header");
        let mut stream = writer.stream_writer().expect("png stream");
        let row = vec![0x80u8; w as usize * 6];
        for _ in 0..h {
            stream.write_all(&row).expect("png row");
        }
        stream.finish().expect("png finish");
    }
    if damaged { cut_idat(&out) } else { out }
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    let mut h = crc32fast::Hasher::new();
    h.update(kind);
    h.update(data);
    c.extend_from_slice(&h.finalize().to_be_bytes());
    c
}

/// The same PNG with all its image data in one IDAT chunk, cut 64 bytes before the zlib stream's
/// end.
fn cut_idat(png: &[u8]) -> Vec<u8> {
    let mut out = png[..8].to_vec();
    let mut idat = Vec::new();
    let mut pos = 8;
    let mut rest = Vec::new();
    while pos + 12 <= png.len() {
        let len = u32::from_be_bytes(png[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let kind: [u8; 4] = png[pos + 4..pos + 8].try_into().expect("4 bytes");
        let data = &png[pos + 8..pos + 8 + len];
        match &kind {
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => rest.extend(png_chunk(&kind, data)),
            _ => out.extend(png_chunk(&kind, data)),
        }
        pos += 12 + len;
    }
    idat.truncate(idat.len().saturating_sub(64));
    out.extend(png_chunk(b"IDAT", &idat));
    out.extend(rest);
    out
}

/// A flat JPEG of `w`×`h` with `components` components (1: grey, 3: colour at 4:4:4), every
/// block coded with the shortest codes there are (1 bit for its DC, 1 bit for end-of-block):
/// a 16,384 × 7,324 one is well under a megabyte. `progressive`: a progressive frame with only
/// its DC scan (a decoder must still hold every coefficient of the image). With `damaged`, the
/// last part of the scan holds codes no table defines.
pub fn flat_jpeg(w: u16, h: u16, components: u8, progressive: bool, damaged: bool) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    // One quantization table of ones.
    j.extend([0xFF, 0xDB, 0x00, 0x43, 0x00]);
    j.extend([1u8; 64]);
    // The frame header.
    let sof = if progressive { 0xC2 } else { 0xC0 };
    let len = 8 + 3 * u16::from(components);
    j.extend([0xFF, sof]);
    j.extend(len.to_be_bytes());
    j.push(8);
    j.extend(h.to_be_bytes());
    j.extend(w.to_be_bytes());
    j.push(components);
    for c in 0..components {
        j.extend([c + 1, 0x11, 0]);
    }
    // Huffman tables with one code each, "0": DC difference 0, and AC end-of-block.
    let mut table = |class: u8| {
        j.extend([0xFF, 0xC4, 0x00, 0x14, class]);
        let mut counts = [0u8; 16];
        counts[0] = 1;
        j.extend(counts);
        j.push(0x00);
    };
    table(0x00);
    if !progressive {
        table(0x10);
    }
    // The scan: every component, interleaved.
    j.extend([0xFF, 0xDA]);
    j.extend((6 + 2 * u16::from(components)).to_be_bytes());
    j.push(components);
    for c in 0..components {
        j.extend([c + 1, 0x00]);
    }
    j.extend([0, if progressive { 0 } else { 63 }, 0]);
    let blocks = u64::from(w.div_ceil(8)) * u64::from(h.div_ceil(8)) * u64::from(components);
    let bits = blocks * if progressive { 1 } else { 2 };
    let mut data = vec![0u8; bits.div_ceil(8) as usize];
    if bits % 8 != 0 {
        // Padding bits are ones.
        let last = data.len() - 1;
        data[last] = 0xFF >> (bits % 8);
    }
    if damaged {
        let n = data.len();
        for b in &mut data[n - n / 50..n - 1] {
            *b = 0xFE;
        }
    }
    j.extend(data);
    j.extend([0xFF, 0xD9]);
    j
}
