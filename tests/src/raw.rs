//! A hand-driven device for server tests: signs manifests with a known key and speaks the HTTP
//! API directly (enroll, tus, receipts), so tests can also send what a correct client never would.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey};
use hattama_core::evidence::{
    DeviceKey, EvidenceKind, Manifest, Page, PhotoInfo, Sha256Hash, SignedManifest,
};
use hattama_core::media::{self, MediaLimits};
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

/// A device key and its chain position.
pub struct RawDevice {
    /// The key.
    pub key: SigningKey,
    /// Next sequence number.
    pub seq: u64,
    /// Hash of the last manifest.
    pub prev: Sha256Hash,
    http: Client,
    /// The token query (`?token=…`) of each upload this device created, by capture id, from
    /// the creations' `Location`.
    tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// The answer of one request: status, headers we care about, JSON body if any.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Upload-Offset`, if present.
    pub offset: Option<u64>,
    /// `Location`, if present.
    pub location: Option<String>,
    /// The body parsed as JSON (Null if empty or not JSON).
    pub body: Value,
}

impl Answer {
    fn from(r: Response) -> Self {
        let status = r.status().as_u16();
        let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let offset = h("Upload-Offset").and_then(|v| v.parse().ok());
        let location = h("Location");
        let body =
            r.bytes().ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
        Self { status, offset, location, body }
    }

    /// The error code word of a JSON error body.
    pub fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

/// A photo as a device would sign it: stripped, with its info.
pub fn clean_photo(path: &Path) -> (Vec<u8>, PhotoInfo) {
    let clean = media::strip(&std::fs::read(path).expect("photo"), &MediaLimits::default())
        .expect("a valid photo");
    let info = clean.info();
    (clean.bytes, info)
}

impl RawDevice {
    /// A device whose key comes from `seed`.
    pub fn new(seed: u8) -> Self {
        Self::with_timeout(seed, 30)
    }

    /// Device number `n` of a crowd (a bench's thousand phones): its key from `n`, distinct
    /// from every other number's and from every key of [`RawDevice::new`].
    pub fn numbered(n: u16) -> Self {
        let mut seed = [0xA5; 32];
        seed[..2].copy_from_slice(&n.to_le_bytes());
        // Never 32 equal bytes, as every key of `new` is.
        seed[31] = 0x5A;
        Self::with_key(seed, 30)
    }

    /// A device whose requests may take up to `secs` seconds.
    pub fn with_timeout(seed: u8, secs: u64) -> Self {
        Self::with_key([seed; 32], secs)
    }

    fn with_key(seed: [u8; 32], secs: u64) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
            seq: 1,
            prev: Sha256Hash::ZERO,
            http: Client::builder()
                .timeout(std::time::Duration::from_secs(secs))
                .build()
                .expect("http client"),
            tokens: Default::default(),
        }
    }

    /// Keeps the token of an upload's `Location` (`/files/<id>?token=…`).
    pub fn remember(&self, location: Option<&str>) {
        if let Some((path, query)) = location.and_then(|l| l.split_once('?')) {
            let id = path.rsplit('/').next().unwrap_or_default().to_owned();
            self.tokens.lock().unwrap().insert(id, format!("?{query}"));
        }
    }

    /// The URL of an upload this device created (with its token), else the bare one.
    pub fn upload_url(&self, url: &str, id: &str) -> String {
        let query = self.tokens.lock().unwrap().get(id).cloned().unwrap_or_default();
        format!("{url}/files/{id}{query}")
    }

    /// The device's public key.
    pub fn public(&self) -> DeviceKey {
        DeviceKey(self.key.verifying_key().to_bytes())
    }

    /// Enrolls with a code.
    pub fn enroll(&self, url: &str, code: &str) -> Answer {
        let key_hex = self.public().to_hex();
        let msg = format!("hattama/enroll/v1\n{code}\n{key_hex}");
        let sig = hex::encode(self.key.sign(msg.as_bytes()).to_bytes());
        let body = json!({ "code": code, "device_key": key_hex, "signature": sig });
        Answer::from(
            self.http.post(format!("{url}/api/v1/enroll")).json(&body).send().expect("send"),
        )
    }

    /// Signs the next manifest of this device's chain for `photo` at `precinct`.
    pub fn sign(&mut self, precinct: &str, photo: &PhotoInfo) -> SignedManifest {
        self.sign_with(precinct, photo, |_| {})
    }

    /// Like [`Self::sign`], letting `edit` change the manifest (note, transcription, page,
    /// capture time) before it is signed.
    pub fn sign_with(
        &mut self,
        precinct: &str,
        photo: &PhotoInfo,
        edit: impl FnOnce(&mut Manifest),
    ) -> SignedManifest {
        let mut m = Manifest {
            captured_at_ms: 1_795_000_000_000 + self.seq,
            device_key: self.public(),
            election: "e2e".into(),
            kind: EvidenceKind::Posted,
            location: None,
            note: None,
            page: Page { count: 1, number: 1 },
            photo: photo.clone(),
            precinct: precinct.into(),
            prev: self.prev,
            seq: self.seq,
            transcription: None,
            utc_offset_min: 300,
            v: 1,
        };
        edit(&mut m);
        let signed = SignedManifest::sign(m, &self.key).expect("sign");
        self.seq += 1;
        self.prev = signed.hash();
        signed
    }

    /// `POST /files/` with explicit metadata.
    pub fn create(&self, url: &str, manifest: &[u8], signature: &str, length: u64) -> Answer {
        let meta = format!("manifest {},signature {}", B64.encode(manifest), B64.encode(signature));
        let answer = Answer::from(
            self.http
                .post(format!("{url}/files/"))
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", length.to_string())
                .header("Upload-Metadata", meta)
                .send()
                .expect("send"),
        );
        self.remember(answer.location.as_deref());
        answer
    }

    /// `HEAD /files/{id}`.
    pub fn head(&self, url: &str, id: &str) -> Answer {
        Answer::from(
            self.http
                .head(self.upload_url(url, id))
                .header("Tus-Resumable", "1.0.0")
                .send()
                .expect("send"),
        )
    }

    /// `PATCH /files/{id}` with `bytes` at `offset`.
    pub fn patch(&self, url: &str, id: &str, offset: u64, bytes: &[u8]) -> Answer {
        self.patch_with(url, id, offset, bytes, &[])
    }

    /// `PATCH` with extra headers.
    pub fn patch_with(
        &self,
        url: &str,
        id: &str,
        offset: u64,
        bytes: &[u8],
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self
            .http
            .patch(self.upload_url(url, id))
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Answer::from(req.body(bytes.to_vec()).send().expect("send"))
    }

    /// `GET /api/v1/receipts/{id}`.
    pub fn receipt(&self, url: &str, id: &str) -> Answer {
        Answer::from(self.http.get(format!("{url}/api/v1/receipts/{id}")).send().expect("send"))
    }

    /// Any request, for hostile tests.
    pub fn http(&self) -> &Client {
        &self.http
    }

    /// Like [`Self::upload`], but a network failure (a server killed mid-request) is an `Err`
    /// instead of a panic.
    pub fn try_upload(
        &self,
        url: &str,
        signed: &SignedManifest,
        photo: &[u8],
    ) -> Result<Answer, reqwest::Error> {
        let sig = hex::encode(signed.signature);
        let meta =
            format!("manifest {},signature {}", B64.encode(&signed.canonical), B64.encode(&sig));
        let created = Answer::from(
            self.http
                .post(format!("{url}/files/"))
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", photo.len().to_string())
                .header("Upload-Metadata", meta)
                .send()?,
        );
        if created.status != 201 {
            return Ok(created);
        }
        self.remember(created.location.as_deref());
        let id = signed.hash().to_hex();
        let offset = created.offset.unwrap_or(0) as usize;
        let patched = Answer::from(
            self.http
                .patch(self.upload_url(url, &id))
                .header("Tus-Resumable", "1.0.0")
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", offset.to_string())
                .body(photo[offset.min(photo.len())..].to_vec())
                .send()?,
        );
        if patched.status != 204 {
            return Ok(patched);
        }
        Ok(Answer::from(self.http.get(format!("{url}/api/v1/receipts/{id}")).send()?))
    }

    /// Creates, sends all bytes and fetches the receipt; returns the last answer.
    pub fn upload(&self, url: &str, signed: &SignedManifest, photo: &[u8]) -> Answer {
        let sig = hex::encode(signed.signature);
        let created = self.create(url, &signed.canonical, &sig, photo.len() as u64);
        if created.status != 201 {
            return created;
        }
        let id = signed.hash().to_hex();
        let offset = self.head(url, &id).offset.expect("offset");
        let patched = self.patch(url, &id, offset, &photo[offset as usize..]);
        if patched.status != 204 {
            return patched;
        }
        self.receipt(url, &id)
    }
}
