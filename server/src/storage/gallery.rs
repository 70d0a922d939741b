//! What the public gallery, the comparison and the open data read, and the official results they
//! import. Everything here is public by design: no observer name, no device serial, no location
//! beyond what the signed manifest itself carries.

use hattama_core::election::Election;
use hattama_core::evidence::Sha256Hash;

use super::StorageError;
use crate::official::{Figures, Version};

/// A stored capture with its public evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicCapture {
    /// Capture id (SHA-256 of the canonical manifest).
    pub id: Sha256Hash,
    /// Precinct.
    pub precinct: String,
    /// Canonical manifest bytes (as signed).
    pub manifest: Vec<u8>,
    /// The device's signature over it.
    pub signature: [u8; 64],
    /// The photo's SHA-256.
    pub photo_sha256: Sha256Hash,
    /// Photo length.
    pub photo_bytes: u64,
    /// When the server stored it.
    pub received_at_ms: u64,
    /// The server's signed receipt (JSON).
    pub receipt: Vec<u8>,
    /// Its index in the public log, once integrated.
    pub log_index: Option<u64>,
}

/// Reads and imports of the public side.
pub trait GalleryStorage: Send + Sync + 'static {
    /// The change counter: a number that differs from the one read before whenever anything
    /// was committed to storage since, by this process or any other sharing the storage (an
    /// admin command, another instance), so caches of derived pages know when to drop. Only
    /// its changes mean something: compare two readings for equality, never for order, and
    /// never across backends.
    fn change_counter(&self) -> Result<u64, StorageError>;
    /// Every election, by id.
    fn elections(&self) -> Result<Vec<Election>, StorageError>;
    /// Stores official figures as the next version unless they equal the newest version.
    /// Returns the new version number, or `None` when nothing changed.
    fn import_official(
        &self,
        election: &str,
        figures: &Figures,
        source: &str,
        sha256: &str,
        now_ms: u64,
    ) -> Result<Option<u64>, StorageError>;
    /// The versions of an election's official figures, oldest first.
    fn official_versions(&self, election: &str) -> Result<Vec<Version>, StorageError>;
    /// The official figures of one version.
    fn official_figures(&self, election: &str, version: u64) -> Result<Figures, StorageError>;
    /// The stored captures of an election (of one precinct when given), in the order received.
    fn public_captures(
        &self,
        election: &str,
        precinct: Option<&str>,
    ) -> Result<Vec<PublicCapture>, StorageError>;
    /// The canonical manifest of a stored capture of this photo (the first one stored).
    fn manifest_of_photo(&self, photo: &Sha256Hash) -> Result<Option<Vec<u8>>, StorageError>;
    /// The precinct of every stored capture of an election.
    fn capture_precincts(&self, election: &str) -> Result<Vec<(Sha256Hash, String)>, StorageError>;
}
