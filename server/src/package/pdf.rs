//! A small page layout over krilla for the evidence packages' PDF reports: paragraphs that wrap,
//! headings, tables that continue on the next page with their header, pictures scaled to fit,
//! QR codes drawn as squares; then every page gets its footer (page numbers and the package's
//! hash) once the number of pages is known.
//!
//! The output is PDF/A-3u: every font embedded (DejaVu, subset), every glyph mapped to its
//! text (so `pdftotext` and screen readers get the words back), files attached as associated
//! files. Nothing comes from the clock: the document's date is given by the caller (a time
//! from the data), and krilla derives the document id from the content, so the same input
//! gives the same bytes.

use std::path::Path;
use std::sync::Arc;

use krilla::Document;
use krilla::color::rgb;
use krilla::configure::{Archival, ConfigurationBuilder};
use krilla::embed::{AssociationKind, EmbeddedFile, MimeType};
use krilla::geom::{PathBuilder, Point, Rect, Size, Transform};
use krilla::image::Image;
use krilla::metadata::{DateTime, Metadata};
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, FillRule};
use krilla::text::{Font, TextDirection};
use skrifa::MetadataProvider as _;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A font file is missing or unreadable.
    #[error("the report's font {path} cannot be read: {source}")]
    FontFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A font file is not a font krilla can embed.
    #[error("{0} is not a usable font")]
    BadFont(String),
    /// krilla refused the document (a PDF/A rule broken, an unreadable picture).
    #[error("cannot make the PDF: {0}")]
    Pdf(String),
}

/// A font and its bytes (krilla embeds it; skrifa measures text with it).
#[derive(Clone)]
struct Face {
    font: Font,
    data: Arc<Vec<u8>>,
}

impl Face {
    fn load(path: &Path) -> Result<Face, ReportError> {
        let bytes = std::fs::read(path)
            .map_err(|source| ReportError::FontFile { path: path.display().to_string(), source })?;
        let data = Arc::new(bytes);
        let font = Font::new(data.clone().into(), 0)
            .ok_or_else(|| ReportError::BadFont(path.display().to_string()))?;
        skrifa::FontRef::new(&data)
            .map_err(|_| ReportError::BadFont(path.display().to_string()))?;
        Ok(Face { font, data })
    }

    /// The advance width of `text` at `size` points, without kerning (line breaking leaves a
    /// margin for it).
    fn width(&self, text: &str, size: f32) -> f32 {
        let Ok(font) = skrifa::FontRef::new(&self.data) else { return 0.0 };
        let charmap = font.charmap();
        let metrics = font.glyph_metrics(
            skrifa::instance::Size::new(size),
            skrifa::instance::LocationRef::default(),
        );
        text.chars()
            .map(|c| {
                let glyph = charmap.map(c).unwrap_or_default();
                metrics.advance_width(glyph).unwrap_or(size * 0.6)
            })
            .sum()
    }
}

/// The report's two fonts: DejaVu Sans and DejaVu Sans Bold (every Kazakh and Russian letter).
#[derive(Clone)]
pub struct Fonts {
    regular: Face,
    bold: Face,
}

impl Fonts {
    /// Reads `DejaVuSans.ttf` and `DejaVuSans-Bold.ttf` from `dir`.
    pub fn load(dir: &Path) -> Result<Fonts, ReportError> {
        Ok(Fonts {
            regular: Face::load(&dir.join("DejaVuSans.ttf"))?,
            bold: Face::load(&dir.join("DejaVuSans-Bold.ttf"))?,
        })
    }

    fn face(&self, bold: bool) -> &Face {
        if bold { &self.bold } else { &self.regular }
    }
}

/// A colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

/// Text.
pub const BLACK: Rgb = Rgb(0, 0, 0);
/// The second language and notes.
pub const GREY: Rgb = Rgb(70, 70, 70);
/// Differences.
pub const RED: Rgb = Rgb(170, 0, 0);
/// The background of a differing row.
pub const RED_BG: Rgb = Rgb(255, 221, 221);
/// The background of table headers.
pub const HEAD_BG: Rgb = Rgb(225, 230, 240);
/// Observed bars.
pub const BLUE: Rgb = Rgb(40, 90, 170);
/// Official bars.
pub const ORANGE: Rgb = Rgb(210, 120, 30);

/// A4 in points.
pub const WIDTH: f32 = 595.28;
/// A4 in points.
pub const HEIGHT: f32 = 841.89;
/// The page margin.
pub const MARGIN: f32 = 48.0;
/// Where the content ends (the footer is below).
pub const BOTTOM: f32 = HEIGHT - 56.0;

enum Op {
    Text { x: f32, y: f32, size: f32, bold: bool, color: Rgb, text: String },
    Rect { x: f32, y: f32, w: f32, h: f32, color: Rgb },
    Image { x: f32, y: f32, w: f32, h: f32, image: Image },
    Qr { x: f32, y: f32, module: f32, width: usize, dark: Vec<bool> },
}

/// One row of a table.
pub struct Row {
    /// The cells' text.
    pub cells: Vec<String>,
    /// A background.
    pub fill: Option<Rgb>,
    /// Bold text.
    pub bold: bool,
}

impl Row {
    /// A plain row.
    pub fn new(cells: Vec<String>) -> Row {
        Row { cells, fill: None, bold: false }
    }
}

/// Pages being laid out, top to bottom.
pub struct Layout<'a> {
    fonts: &'a Fonts,
    pages: Vec<Vec<Op>>,
    /// The top of the next thing on the current page.
    pub y: f32,
}

impl<'a> Layout<'a> {
    /// An empty first page.
    pub fn new(fonts: &'a Fonts) -> Layout<'a> {
        Layout { fonts, pages: vec![Vec::new()], y: MARGIN }
    }

    fn ops(&mut self) -> &mut Vec<Op> {
        if self.pages.is_empty() {
            self.pages.push(Vec::new());
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    /// Starts a new page.
    pub fn page(&mut self) {
        self.pages.push(Vec::new());
        self.y = MARGIN;
    }

    /// Starts a new page unless `h` points fit on this one.
    pub fn need(&mut self, h: f32) {
        if self.y + h > BOTTOM {
            self.page();
        }
    }

    /// Vertical space.
    pub fn gap(&mut self, h: f32) {
        self.y += h;
    }

    /// The width of `text`.
    pub fn width(&self, text: &str, size: f32, bold: bool) -> f32 {
        self.fonts.face(bold).width(text, size)
    }

    /// `text` broken into lines of at most `width` points (at spaces; a word too long for a
    /// line is cut where it must be). Line feeds are kept.
    pub fn wrap(&self, text: &str, size: f32, bold: bool, width: f32) -> Vec<String> {
        let mut lines = Vec::new();
        for paragraph in text.split('\n') {
            let mut line = String::new();
            for word in paragraph.split(' ') {
                let candidate =
                    if line.is_empty() { word.to_owned() } else { format!("{line} {word}") };
                if self.width(&candidate, size, bold) <= width {
                    line = candidate;
                    continue;
                }
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                // The word alone; cut it if it is wider than a line (hashes, paths).
                let mut piece = String::new();
                for c in word.chars() {
                    piece.push(c);
                    if self.width(&piece, size, bold) > width && piece.chars().count() > 1 {
                        piece.pop();
                        lines.push(std::mem::take(&mut piece));
                        piece.push(c);
                    }
                }
                line = piece;
            }
            lines.push(line);
        }
        lines
    }

    /// Text at a place, on the current page (no wrapping).
    pub fn text_at(&mut self, x: f32, y: f32, size: f32, bold: bool, color: Rgb, text: &str) {
        if !text.is_empty() {
            self.ops().push(Op::Text { x, y, size, bold, color, text: text.to_owned() });
        }
    }

    /// A filled rectangle on the current page.
    pub fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, color: Rgb) {
        self.ops().push(Op::Rect { x, y, w, h, color });
    }

    /// A paragraph across the page's width, starting at `x`.
    pub fn para_at(&mut self, x: f32, text: &str, size: f32, bold: bool, color: Rgb) {
        let lead = size * 1.35;
        for line in self.wrap(text, size, bold, WIDTH - MARGIN - x) {
            self.need(lead);
            let y = self.y + size;
            self.text_at(x, y, size, bold, color, &line);
            self.y += lead;
        }
        self.y += size * 0.45;
    }

    /// A paragraph across the page's width.
    pub fn para(&mut self, text: &str, size: f32, bold: bool, color: Rgb) {
        self.para_at(MARGIN, text, size, bold, color);
    }

    /// A section heading (on a new page when little room is left).
    pub fn heading(&mut self, text: &str) {
        self.need(90.0);
        self.y += 8.0;
        self.para(text, 13.0, true, BLACK);
        self.rect(MARGIN, self.y - 4.0, WIDTH - 2.0 * MARGIN, 0.8, GREY);
        self.y += 4.0;
    }

    /// A table: column widths (points), a header row repeated on every page it spans, and rows.
    /// Every column but the first is aligned right when `numeric` says so.
    pub fn table(&mut self, widths: &[f32], numeric: &[bool], header: Vec<String>, rows: Vec<Row>) {
        const SIZE: f32 = 9.0;
        const PAD: f32 = 4.0;
        let header = Row { cells: header, fill: Some(HEAD_BG), bold: true };
        let header_height = self.row_height(widths, &header, SIZE, PAD);
        self.need(header_height + 20.0);
        self.draw_row(widths, numeric, &header, SIZE, PAD);
        for row in rows {
            let h = self.row_height(widths, &row, SIZE, PAD);
            if self.y + h > BOTTOM {
                self.page();
                self.draw_row(widths, numeric, &header, SIZE, PAD);
            }
            self.draw_row(widths, numeric, &row, SIZE, PAD);
        }
        self.y += 8.0;
    }

    fn row_height(&self, widths: &[f32], row: &Row, size: f32, pad: f32) -> f32 {
        let lines = row
            .cells
            .iter()
            .zip(widths)
            .map(|(c, w)| self.wrap(c, size, row.bold, w - 2.0 * pad).len())
            .max()
            .unwrap_or(1);
        lines as f32 * size * 1.3 + 2.0 * pad
    }

    fn draw_row(&mut self, widths: &[f32], numeric: &[bool], row: &Row, size: f32, pad: f32) {
        let h = self.row_height(widths, row, size, pad);
        let total: f32 = widths.iter().sum();
        if let Some(fill) = row.fill {
            self.rect(MARGIN, self.y, total, h, fill);
        }
        self.rect(MARGIN, self.y + h - 0.4, total, 0.4, GREY);
        let mut x = MARGIN;
        for (i, (cell, w)) in row.cells.iter().zip(widths).enumerate() {
            let color = if row.fill == Some(RED_BG) && i > 0 { RED } else { BLACK };
            let lines = self.wrap(cell, size, row.bold, w - 2.0 * pad);
            for (n, line) in lines.iter().enumerate() {
                let right = numeric.get(i).copied().unwrap_or(false);
                let lx =
                    if right { x + w - pad - self.width(line, size, row.bold) } else { x + pad };
                let ly = self.y + pad + size + n as f32 * size * 1.3;
                self.text_at(lx, ly, size, row.bold, color, line);
            }
            x += w;
        }
        self.y += h;
    }

    /// A picture as large as fits between here and the bottom of the page, centred.
    pub fn image(&mut self, image: Image) {
        let (pw, ph) = image.size();
        if pw == 0 || ph == 0 {
            return;
        }
        let (max_w, max_h) = (WIDTH - 2.0 * MARGIN, BOTTOM - self.y);
        let scale = (max_w / pw as f32).min(max_h / ph as f32);
        let (w, h) = (pw as f32 * scale, ph as f32 * scale);
        let x = MARGIN + (max_w - w) / 2.0;
        let y = self.y;
        self.ops().push(Op::Image { x, y, w, h, image });
        self.y += h + 6.0;
    }

    /// A QR code of `text`, `size` points wide, with its top left corner at (`x`, `y`).
    pub fn qr(&mut self, x: f32, y: f32, size: f32, text: &str) -> Result<(), ReportError> {
        let code = qrcode::QrCode::new(text.as_bytes())
            .map_err(|e| ReportError::Pdf(format!("the QR code: {e}")))?;
        let width = code.width();
        let dark = code.to_colors().into_iter().map(|c| c == qrcode::Color::Dark).collect();
        // Four modules of quiet zone on each side, as the standard asks.
        let module = size / (width as f32 + 8.0);
        self.ops().push(Op::Qr { x: x + 4.0 * module, y: y + 4.0 * module, module, width, dark });
        Ok(())
    }
}

/// What a document says about itself.
pub struct Meta {
    /// Its title.
    pub title: String,
    /// Its main language (`kk`).
    pub language: String,
    /// Its date: a time from the data, never the clock (ms since the Unix epoch, UTC).
    pub date_ms: u64,
    /// The footer's first line of page `n` of `total`.
    pub page_label: Box<dyn Fn(usize, usize) -> String>,
    /// The footer's second line (the package's hash).
    pub footer: String,
}

fn date_of(ms: u64) -> DateTime {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)).clamp(1970, 9999) as u16;
    DateTime::new(year)
        .month(month)
        .day(day)
        .hour((rem / 3600) as u8)
        .minute((rem % 3600 / 60) as u8)
        .second((rem % 60) as u8)
        .utc_offset_hour(0)
        .utc_offset_minute(0)
}

/// The media type of an attached file, by its name.
fn mime_of(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("jpg") => "image/jpeg",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("pdf") => "application/pdf",
        _ => "text/plain",
    }
}

fn fill(color: Rgb) -> Fill {
    Fill {
        paint: rgb::Color::new(color.0, color.1, color.2).into(),
        opacity: NormalizedF32::ONE,
        rule: FillRule::NonZero,
    }
}

/// Renders the laid-out pages with their footers into a PDF/A-3u file, with `attachments`
/// (path, bytes) attached.
pub fn render(
    layout: Layout<'_>,
    meta: &Meta,
    attachments: &[(String, Vec<u8>)],
) -> Result<Vec<u8>, ReportError> {
    let fonts = layout.fonts;
    let configuration = ConfigurationBuilder::new()
        .with_archival_validator(Archival::A3_U)
        .finish()
        .map_err(|e| ReportError::Pdf(format!("{e:?}")))?;
    let settings =
        krilla::SerializeSettings { configuration, ..krilla::SerializeSettings::default() };
    let mut doc = Document::new_with(settings);
    let date = date_of(meta.date_ms);
    doc.set_metadata(
        Metadata::new()
            .title(meta.title.clone())
            .language(meta.language.clone())
            .creator("Hattama".into())
            .creation_date(date),
    );
    for (path, bytes) in attachments {
        let file = EmbeddedFile {
            path: path.clone(),
            mime_type: MimeType::new(mime_of(path)),
            description: Some(path.clone()),
            association_kind: AssociationKind::Source,
            data: bytes.clone().into(),
            modification_date: Some(date),
            compress: None,
            location: None,
        };
        doc.embed_file(file)
            .ok_or_else(|| ReportError::Pdf(format!("{path} is attached twice")))?;
    }
    let total = layout.pages.len();
    let page_size = PageSettings::from_wh(WIDTH, HEIGHT)
        .ok_or_else(|| ReportError::Pdf("the page size".into()))?;
    for (n, ops) in layout.pages.into_iter().enumerate() {
        let mut page = doc.start_page_with(page_size.clone());
        let mut surface = page.surface();
        for op in ops {
            match op {
                Op::Text { x, y, size, bold, color, text } => {
                    surface.set_fill(Some(fill(color)));
                    surface.draw_text(
                        Point::from_xy(x, y),
                        fonts.face(bold).font.clone(),
                        size,
                        &text,
                        false,
                        TextDirection::Auto,
                    );
                }
                Op::Rect { x, y, w, h, color } => {
                    if let Some(path) = rect_path(x, y, w, h) {
                        surface.set_fill(Some(fill(color)));
                        surface.draw_path(&path);
                    }
                }
                Op::Image { x, y, w, h, image } => {
                    if let Some(size) = Size::from_wh(w, h) {
                        surface.push_transform(&Transform::from_translate(x, y));
                        surface.draw_image(image, size);
                        surface.pop();
                    }
                }
                Op::Qr { x, y, module, width, dark } => {
                    surface.set_fill(Some(fill(BLACK)));
                    let mut pb = PathBuilder::new();
                    for (i, d) in dark.iter().enumerate() {
                        if *d {
                            let (col, row) = ((i % width) as f32, (i / width) as f32);
                            if let Some(r) =
                                Rect::from_xywh(x + col * module, y + row * module, module, module)
                            {
                                pb.push_rect(r);
                            }
                        }
                    }
                    if let Some(path) = pb.finish() {
                        surface.draw_path(&path);
                    }
                }
            }
        }
        // The footer: page n of total, and the package's hash.
        surface.set_fill(Some(fill(GREY)));
        let label = (meta.page_label)(n + 1, total);
        for (i, line) in [label, meta.footer.clone()].iter().enumerate() {
            surface.draw_text(
                Point::from_xy(MARGIN, HEIGHT - 36.0 + i as f32 * 10.0),
                fonts.regular.font.clone(),
                7.5,
                line,
                false,
                TextDirection::Auto,
            );
        }
        surface.finish();
        page.finish();
    }
    doc.finish().map_err(|e| ReportError::Pdf(format!("{e:?}")))
}

fn rect_path(x: f32, y: f32, w: f32, h: f32) -> Option<krilla::geom::Path> {
    let mut pb = PathBuilder::new();
    pb.push_rect(Rect::from_xywh(x, y, w, h)?);
    pb.finish()
}

/// A photo as a picture for the PDF (JPEG or PNG, as signed).
pub fn picture(path: &str, bytes: &[u8]) -> Result<Image, ReportError> {
    let data: krilla::Data = bytes.to_vec().into();
    let image = if path.ends_with(".png") {
        Image::from_png(data, false)
    } else {
        Image::from_jpeg(data, false)
    };
    image.map_err(|e| ReportError::Pdf(format!("the picture {path}: {e}")))
}
