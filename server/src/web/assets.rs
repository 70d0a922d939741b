//! Static files of the web UI (`server/static/`), compiled into the binary and served under
//! content-hashed names (`/static/app.3f9a0c1d2e4b5a69.css`), so that they can be cached
//! forever: a changed file is a new URL. No front-end build step: what is in `server/static/` is
//! what the browser gets.

use std::sync::LazyLock;

use actix_web::{HttpResponse, web};
use sha2::{Digest, Sha256};

use super::WebError;

/// One static file.
struct Asset {
    /// The file name in `server/static/` (`app.css`).
    name: &'static str,
    /// The name it is served under (`app.<16 hex digits>.css`).
    hashed: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        ($name, $type, include_bytes!(concat!("../../static/", $name)).as_slice())
    };
}

/// Every static file: its name, media type and bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("gallery.css", "text/css; charset=utf-8"),
    asset!("review.css", "text/css; charset=utf-8"),
    asset!("viewer.js", "text/javascript; charset=utf-8"),
    asset!("check.js", "text/javascript; charset=utf-8"),
    asset!("copy.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, content_type, bytes)| {
            let hash = hex::encode(&Sha256::digest(bytes)[..8]);
            let hashed = match name.rsplit_once('.') {
                Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
                None => format!("{name}.{hash}"),
            };
            Asset { name, hashed, content_type, bytes }
        })
        .collect()
});

/// The URL of a static file by its name in `server/static/` (`/static/app.<hash>.css`).
/// An unknown name gives a URL that answers 404 (and a unit test checks every template's names).
pub fn url(name: &str) -> String {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => format!("/static/{}", a.hashed),
        None => {
            tracing::warn!(name, "unknown static file");
            format!("/static/{name}")
        }
    }
}

/// `GET /static/{file}`: a static file by its hashed name, cached for a year.
pub async fn serve(path: web::Path<String>) -> Result<HttpResponse, WebError> {
    let asset = ASSETS.iter().find(|a| a.hashed == *path).ok_or(WebError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header(("Cache-Control", "public, max-age=31536000, immutable"))
        .body(asset.bytes))
}

/// `GET /favicon.ico`: browsers ask for it on pages that name none (a photo opened on its own);
/// it is the site's SVG icon.
pub async fn favicon() -> Result<HttpResponse, WebError> {
    let asset = ASSETS.iter().find(|a| a.name == "favicon.svg").ok_or(WebError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header(("Cache-Control", "public, max-age=86400"))
        .body(asset.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_content_hash() {
        let css = url("app.css");
        assert!(css.starts_with("/static/app.") && css.ends_with(".css"), "{css}");
        assert_eq!(css.len(), "/static/app.".len() + 16 + ".css".len());
        let bytes = include_bytes!("../../static/app.css");
        assert!(css.contains(&hex::encode(&Sha256::digest(bytes)[..8])));
    }

    #[test]
    fn every_static_file_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = FILES.iter().map(|f| f.0.to_owned()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
    }
}
