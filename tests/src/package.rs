//! Evidence packages in tests: their entries, a copy with one entry changed, and the two
//! verifiers (the real `hattama verify-package` and the independent Python one written from
//! `docs/evidence-package.md`, `tests/package-py/`).

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use crate::bin;

/// The entries of a zip, in order.
pub fn entries(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut f = archive.by_index(i).unwrap();
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).unwrap();
            (f.name().unwrap().into_owned(), bytes)
        })
        .collect()
}

/// The same entries written again, `change` applied to the entry named `name`.
pub fn tampered(zip: &[u8], name: &str, change: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut found = false;
    for (path, mut bytes) in entries(zip) {
        if path == name {
            change(&mut bytes);
            found = true;
        }
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        out.start_file(path.as_str(), options).unwrap();
        out.write_all(&bytes).unwrap();
    }
    assert!(found, "the package has no {name}");
    out.finish().unwrap().into_inner()
}

/// Runs `hattama verify-package` on `zip`; its exit code and output.
pub fn verify(zip: &[u8], dir: &Path, receipt_key: &str) -> (i32, String) {
    let file = dir.join("package.zip");
    std::fs::write(&file, zip).unwrap();
    let out = Command::new(bin("hattama"))
        .arg("verify-package")
        .arg(&file)
        .args(["--receipt-key", receipt_key])
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap(), text)
}

/// Runs the independent Python verifier (`tests/package-py/verify_package.py`, written from
/// docs/evidence-package.md) on `zip`; its exit code and output.
pub fn python_verify(zip: &[u8], dir: &Path, receipt_key: &str) -> (i32, String) {
    let root = crate::browser::repo_root();
    // It needs `cryptography` and `pypdf` (tests/package-py/requirements.txt), which scripts/test
    // installs.
    let python = root.join("build/package-venv/bin/python");
    assert!(python.exists(), "{} is missing: scripts/test installs it", python.display());
    let file = dir.join("package-py.zip");
    std::fs::write(&file, zip).unwrap();
    let out = Command::new(python)
        .arg(root.join("tests/package-py/verify_package.py"))
        .arg(&file)
        .arg(receipt_key)
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap(), text)
}
