//! The check of a station package's `report.pdf` (`docs/evidence-package.md` section 5, step
//! 7): the PDF is for people, and what it shows is not evidence by itself, but the files it
//! carries inside (its attachments) must be the package's own, byte for byte, so that whoever
//! receives only the PDF still holds the evidence.

use std::collections::BTreeMap;

/// Checks the attachments of `report.pdf` against the other entries of the package.
pub(super) fn check(files: &BTreeMap<String, Vec<u8>>) -> Result<String, String> {
    let Some(pdf) = files.get(super::REPORT) else {
        return Err("missing".into());
    };
    attachments_match(files, pdf)
}

#[cfg(feature = "pdf")]
fn attachments_match(files: &BTreeMap<String, Vec<u8>>, pdf: &[u8]) -> Result<String, String> {
    let attached = attachments(pdf)?;
    for (name, bytes) in &attached {
        match files.get(name) {
            None => return Err(format!("it carries {name}, which the package does not have")),
            Some(b) if b != bytes => {
                return Err(format!("the {name} it carries is not the package's {name}"));
            }
            Some(_) => {}
        }
    }
    let expected = files.keys().filter(|p| *p != super::REPORT && *p != super::SUMS);
    for path in expected {
        if !attached.contains_key(path) {
            return Err(format!("it does not carry {path}"));
        }
    }
    Ok(format!(
        "nothing by itself (it is for reading and printing); the {} files it carries are the \
         package's, byte for byte",
        attached.len()
    ))
}

#[cfg(not(feature = "pdf"))]
fn attachments_match(_files: &BTreeMap<String, Vec<u8>>, _pdf: &[u8]) -> Result<String, String> {
    Ok("nothing by itself (it is for reading and printing); its attachments are not read by \
        this build"
        .into())
}

/// The embedded files of a PDF (its `/Names /EmbeddedFiles` name tree): name → bytes.
#[cfg(feature = "pdf")]
fn attachments(pdf: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    use lopdf::{Dictionary, Document, Object};

    let limit = usize::try_from(super::MAX_REPORT).unwrap_or(usize::MAX);
    let options = lopdf::LoadOptions { max_decompressed_size: Some(limit), ..Default::default() };
    let doc = Document::load_mem_with_options(pdf, options)
        .map_err(|e| format!("not a PDF that can be read: {e}"))?;
    let bad = |what: &str| format!("its list of attached files is malformed ({what})");
    let deref = |o: &Object| -> Result<Object, String> {
        doc.dereference(o).map(|(_, o)| o.clone()).map_err(|e| bad(&e.to_string()))
    };
    let dict = |o: &Object| -> Result<Dictionary, String> {
        deref(o)?.as_dict().cloned().map_err(|_| bad("a dictionary expected"))
    };
    let catalog = doc.catalog().map_err(|e| bad(&e.to_string()))?;
    let Ok(names) = catalog.get(b"Names") else {
        return Err("it carries no files".into());
    };
    let Ok(tree) = dict(names)?.get(b"EmbeddedFiles").cloned() else {
        return Err("it carries no files".into());
    };
    let mut out = BTreeMap::new();
    let mut todo = vec![(dict(&tree)?, 0usize)];
    while let Some((node, depth)) = todo.pop() {
        if depth > 32 {
            return Err(bad("its name tree is too deep"));
        }
        if let Ok(kids) = node.get(b"Kids") {
            for kid in deref(kids)?.as_array().map_err(|_| bad("Kids"))? {
                todo.push((dict(kid)?, depth + 1));
            }
        }
        let Ok(pairs) = node.get(b"Names") else { continue };
        let pairs = deref(pairs)?;
        let pairs = pairs.as_array().map_err(|_| bad("Names"))?;
        for pair in pairs.chunks(2) {
            let [_, spec] = pair else { return Err(bad("an odd Names array")) };
            let spec = dict(spec)?;
            let name = spec.get(b"UF").or_else(|_| spec.get(b"F")).map_err(|_| bad("no name"))?;
            let name = deref(name)?;
            let name = lopdf::decode_text_string(&name).map_err(|_| bad("a name"))?;
            let ef = dict(spec.get(b"EF").map_err(|_| bad("no EF"))?)?;
            let stream = ef.get(b"UF").or_else(|_| ef.get(b"F")).map_err(|_| bad("no EF F"))?;
            let stream = deref(stream)?;
            let stream = stream.as_stream().map_err(|_| bad("an embedded file's stream"))?;
            let bytes = stream
                .decompressed_content_with_limit(limit)
                .map_err(|e| format!("the attached {name} cannot be read: {e}"))?;
            if out.insert(name.clone(), bytes).is_some() {
                return Err(format!("it carries {name} twice"));
            }
        }
    }
    Ok(out)
}
