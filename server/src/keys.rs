//! The server's signing keys, created on first start in `<data dir>/keys/` (mode 0600).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ed25519_dalek::SigningKey;
use hattama_core::evidence::{DeviceKey, parse_lower_hex};

/// The keys the server signs with.
pub struct ServerKeys {
    /// Signs receipts.
    pub receipt: SigningKey,
    /// Signs log checkpoints.
    pub log: SigningKey,
    /// The secret of upload tokens (`routes::tus`): random bytes, kept as a key file.
    pub upload_tokens: [u8; 32],
}

impl ServerKeys {
    /// Loads the keys from `dir/keys`, creating any that is missing.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Self> {
        let keys = dir.join("keys");
        fs::create_dir_all(&keys)?;
        Ok(Self {
            receipt: load_or_create(&keys.join("receipt.key"))?,
            log: load_or_create(&keys.join("log.key"))?,
            upload_tokens: load_or_create(&keys.join("upload-token.key"))?.to_bytes(),
        })
    }

    /// The receipt public key.
    pub fn receipt_public(&self) -> DeviceKey {
        DeviceKey(self.receipt.verifying_key().to_bytes())
    }
}

/// Reads a key file of the server (64 lowercase hex digits and a line end).
pub fn read_key(path: &Path) -> std::io::Result<SigningKey> {
    parse_key(path, &fs::read_to_string(path)?)
}

fn parse_key(path: &Path, text: &str) -> std::io::Result<SigningKey> {
    parse_lower_hex::<32>(text.trim())
        .map(|b| SigningKey::from_bytes(&b))
        .ok_or_else(|| std::io::Error::other(format!("{} is not a key", path.display())))
}

fn load_or_create(path: &Path) -> std::io::Result<SigningKey> {
    match fs::read_to_string(path) {
        Ok(text) => parse_key(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let mut f =
                fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
            f.write_all(format!("{}\n", hex::encode(key.to_bytes())).as_bytes())?;
            f.sync_all()?;
            fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}
