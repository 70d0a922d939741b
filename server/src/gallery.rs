//! The public side's view of the data: per election, who photographed what, what coordinators
//! verified, what the commission published (every version), and how they compare. Public pages,
//! the JSON API and the open-data exports all read these views, so they always agree.
//!
//! Views are derived, so they are cached: [`Gallery`] keeps one [`ElectionView`] per election
//! and a cache of rendered responses, and drops both when storage reports a commit
//! (`GalleryStorage::change_counter`, looked at no more than every [`RECHECK`]). Public data is
//! therefore at most that much behind the database.
//!
//! What is public: every capture not rejected by a coordinator (a rejected capture stays in the
//! log, and its evidence stays reachable by its hash, but the gallery does not show it), the
//! signed manifests, receipts and log positions, verified transcriptions, official figures.
//! Nothing here names an observer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hattama_core::election::{Election, Precinct};
use hattama_core::evidence::{Manifest, Sha256Hash};
use serde::Serialize;

use crate::compare::{Comparison, compare};
use crate::official::{Change, Figures, Version, changes};
use crate::storage::review::{DecisionKind, ReviewStorage, Transcription, TranscriptionStatus};
use crate::storage::{GalleryStorage, PublicCapture, StorageError};

/// How often the data version is looked at, at most.
pub const RECHECK: Duration = Duration::from_millis(250);

/// Most bytes the response cache holds before it starts over.
const RESPONSE_CACHE_BYTES: usize = 256 * 1024 * 1024;

/// Most bytes of photos kept in memory (photos are immutable: a cached photo is never stale).
const PHOTO_CACHE_BYTES: usize = 256 * 1024 * 1024;

/// Photos larger than this are always read from disk.
const PHOTO_CACHE_MAX_ONE: usize = 8 * 1024 * 1024;

/// The most requested photos in memory: election night traffic asks for the same few thousand
/// photos again and again. Starts over when full.
#[derive(Default)]
pub struct PhotoCache {
    photos: RwLock<(HashMap<Sha256Hash, actix_web::web::Bytes>, usize)>,
}

impl PhotoCache {
    /// A cached photo.
    pub fn get(&self, sha: &Sha256Hash) -> Option<actix_web::web::Bytes> {
        self.photos.read().ok()?.0.get(sha).cloned()
    }

    /// Keeps a photo read from disk.
    pub fn put(&self, sha: Sha256Hash, bytes: actix_web::web::Bytes) {
        if bytes.len() > PHOTO_CACHE_MAX_ONE {
            return;
        }
        if let Ok(mut p) = self.photos.write() {
            if p.1 + bytes.len() > PHOTO_CACHE_BYTES {
                p.0.clear();
                p.1 = 0;
            }
            p.1 += bytes.len();
            if let Some(old) = p.0.insert(sha, bytes) {
                p.1 -= old.len();
            }
        }
    }
}

/// A coordinator's decision as the public sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicState {
    /// Not reviewed yet.
    Pending,
    /// Accepted: the photo shows this precinct's protocol.
    Accepted,
    /// Flagged for a supervisor.
    Flagged,
    /// Rejected (not shown in the gallery).
    Rejected,
}

/// What review says, for the public views: the newest decision per capture (absent:
/// pending) and the transcriptions by precinct.
#[derive(Clone, Debug, Default)]
pub struct ReviewFacts {
    /// The newest decision per capture (absent: pending).
    pub decisions: HashMap<Sha256Hash, PublicState>,
    /// Transcriptions by precinct.
    pub transcriptions: HashMap<String, Transcription>,
}

impl ReviewFacts {
    /// The review facts of one election, from the review storage.
    pub fn load(review: &dyn ReviewStorage, election: &str) -> Result<Self, StorageError> {
        let decisions = review
            .capture_decisions(election)?
            .into_iter()
            .map(|(id, d)| {
                let state = match d.kind {
                    DecisionKind::Accepted => PublicState::Accepted,
                    DecisionKind::Rejected => PublicState::Rejected,
                    DecisionKind::Flagged => PublicState::Flagged,
                };
                (id, state)
            })
            .collect();
        let transcriptions =
            review.transcriptions(election)?.into_iter().map(|t| (t.precinct.clone(), t)).collect();
        Ok(Self { decisions, transcriptions })
    }
}

/// Counts over a set of precincts (an election, a region, a district).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Precincts.
    pub precincts: u64,
    /// Precincts with at least one public photo.
    pub photographed: u64,
    /// Precincts with an accepted photo.
    pub accepted: u64,
    /// Public captures.
    pub captures: u64,
    /// Precincts with a verified transcription.
    pub verified: u64,
    /// Precincts whose verified and official figures differ.
    pub differing: u64,
}

impl Coverage {
    /// `accepted / precincts` in percent, for the bar chart.
    pub fn accepted_pct(&self) -> f64 {
        if self.precincts == 0 { 0.0 } else { 100.0 * self.accepted as f64 / self.precincts as f64 }
    }

    /// `photographed / precincts` in percent.
    pub fn photographed_pct(&self) -> f64 {
        if self.precincts == 0 {
            0.0
        } else {
            100.0 * self.photographed as f64 / self.precincts as f64
        }
    }
}

/// A named group of precincts with its counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Area {
    /// Region or district name.
    pub name: String,
    /// Its counts.
    pub coverage: Coverage,
}

/// Per-precinct facts of an election view.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PrecinctFacts {
    /// Public captures.
    pub captures: u64,
    /// Accepted captures.
    pub accepted: u64,
    /// Captures awaiting review.
    pub pending: u64,
}

/// Everything public about one election, derived once per data version.
#[derive(Debug)]
pub struct ElectionView {
    /// The definition.
    pub election: Election,
    /// Totals over the election.
    pub coverage: Coverage,
    /// Per region, by name.
    pub regions: Vec<Area>,
    /// Per district of each region.
    pub districts: BTreeMap<String, Vec<Area>>,
    /// Per precinct.
    pub precincts: HashMap<String, PrecinctFacts>,
    /// The newest decision per capture.
    pub decisions: HashMap<Sha256Hash, PublicState>,
    /// Transcriptions by precinct.
    pub transcriptions: HashMap<String, Transcription>,
    /// Verified figures by precinct.
    pub observed: Figures,
    /// Official versions, oldest first.
    pub official_versions: Vec<Version>,
    /// Official figures of the newest version.
    pub official: Figures,
    /// Every change between consecutive versions.
    pub official_changes: Vec<Change>,
    /// Observed against official.
    pub comparison: Comparison,
    /// The precincts whose observed and official figures differ.
    pub differing: HashSet<String>,
}

impl ElectionView {
    /// Builds the view of `election` from storage and review facts.
    pub fn build(
        storage: &dyn GalleryStorage,
        election: Election,
        facts: ReviewFacts,
        official: &Official,
    ) -> Result<Self, StorageError> {
        let official_versions = official.versions.clone();
        let official_changes = official.changes.clone();
        let official = official.figures.clone();
        let observed: Figures = facts
            .transcriptions
            .iter()
            .filter(|(_, t)| t.status == TranscriptionStatus::Verified && !t.values.is_empty())
            .map(|(p, t)| (p.clone(), t.values.clone()))
            .collect();
        let comparison = compare(&election.protocol, &observed, &official);
        let differing: HashSet<String> =
            comparison.differences.iter().map(|d| d.precinct.clone()).collect();
        let mut precincts: HashMap<String, PrecinctFacts> = HashMap::new();
        for (id, precinct) in storage.capture_precincts(&election.id)? {
            let state = facts.decisions.get(&id).copied().unwrap_or(PublicState::Pending);
            if state == PublicState::Rejected {
                continue;
            }
            let f = precincts.entry(precinct).or_default();
            f.captures += 1;
            match state {
                PublicState::Accepted => f.accepted += 1,
                PublicState::Pending => f.pending += 1,
                PublicState::Flagged | PublicState::Rejected => {}
            }
        }
        let count = |p: &Precinct, c: &mut Coverage| {
            let f = precincts.get(&p.id);
            c.precincts += 1;
            c.photographed += u64::from(f.is_some_and(|f| f.captures > 0));
            c.accepted += u64::from(f.is_some_and(|f| f.accepted > 0));
            c.captures += f.map_or(0, |f| f.captures);
            c.verified += u64::from(observed.contains_key(&p.id));
            c.differing += u64::from(differing.contains(&p.id));
        };
        let mut coverage = Coverage::default();
        let mut regions: BTreeMap<String, Coverage> = BTreeMap::new();
        let mut districts: BTreeMap<String, BTreeMap<String, Coverage>> = BTreeMap::new();
        for p in &election.precincts {
            count(p, &mut coverage);
            count(p, regions.entry(p.region.clone()).or_default());
            count(
                p,
                districts
                    .entry(p.region.clone())
                    .or_default()
                    .entry(p.district.clone())
                    .or_default(),
            );
        }
        let areas = |m: BTreeMap<String, Coverage>| -> Vec<Area> {
            m.into_iter().map(|(name, coverage)| Area { name, coverage }).collect()
        };
        Ok(Self {
            coverage,
            regions: areas(regions),
            districts: districts.into_iter().map(|(r, d)| (r, areas(d))).collect(),
            precincts,
            decisions: facts.decisions,
            transcriptions: facts.transcriptions,
            observed,
            official_versions,
            official,
            official_changes,
            comparison,
            differing,
            election,
        })
    }

    /// Precincts matching a search: a number (exact, or a prefix), as people write it ("140",
    /// "№140", "No. 140", "участок 140", "140-участке", "140 учаске"), or words that all occur in
    /// the address, district or region (case-insensitive). At most `limit`, by number; the
    /// second value is how many matched in all.
    pub fn search_counted(&self, query: &str, limit: usize) -> (Vec<&Precinct>, usize) {
        let q = query.trim().to_lowercase();
        if q.is_empty() {
            return (Vec::new(), 0);
        }
        let number = hattama_core::election::precinct_number(&q).map(|n| n.to_string());
        let mut hits: Vec<&Precinct> = if let Some(number) = number {
            let exact: Vec<&Precinct> =
                self.election.precincts.iter().filter(|p| p.number.to_string() == number).collect();
            if exact.is_empty() {
                self.election
                    .precincts
                    .iter()
                    .filter(|p| p.number.to_string().starts_with(&number))
                    .collect()
            } else {
                exact
            }
        } else {
            let words: Vec<&str> = q.split_whitespace().collect();
            self.election
                .precincts
                .iter()
                .filter(|p| {
                    let hay = format!("{} {} {} {}", p.id, p.address, p.district, p.region)
                        .to_lowercase();
                    words.iter().all(|w| hay.contains(w))
                })
                .collect()
        };
        hits.sort_by_key(|p| p.number);
        let total = hits.len();
        hits.truncate(limit);
        (hits, total)
    }

    /// [`Self::search_counted`] without the count.
    pub fn search(&self, query: &str, limit: usize) -> Vec<&Precinct> {
        self.search_counted(query, limit).0
    }

    /// The official changes of one precinct, oldest first.
    pub fn changes_of(&self, precinct: &str) -> Vec<&Change> {
        self.official_changes.iter().filter(|c| c.precinct == precinct).collect()
    }
}

/// The official results of an election: every version, the newest figures, and the changes
/// between versions. Derived from every version's figures, so it is kept until a new version is
/// imported (not rebuilt with every capture stored).
#[derive(Debug, Default)]
pub struct Official {
    /// The versions, oldest first.
    pub versions: Vec<Version>,
    /// The newest version's figures.
    pub figures: Figures,
    /// Every change between consecutive versions.
    pub changes: Vec<Change>,
}

impl Official {
    /// Reads every version of an election's official figures.
    pub fn load(
        storage: &dyn GalleryStorage,
        election: &str,
        versions: Vec<Version>,
    ) -> Result<Self, StorageError> {
        let mut figures = Figures::new();
        let mut all_changes = Vec::new();
        for v in &versions {
            let next = storage.official_figures(election, v.version)?;
            if v.version > 1 {
                all_changes.extend(changes(v.version, &figures, &next));
            }
            figures = next;
        }
        Ok(Self { versions, figures, changes: all_changes })
    }
}

/// One capture as a precinct page and the API show it.
#[derive(Clone, Debug, Serialize)]
pub struct CaptureView {
    /// Capture id, hex.
    pub id: String,
    /// The photo's SHA-256, hex (its content address: `/photos/<sha256>`).
    pub photo_sha256: String,
    /// Photo bytes.
    pub photo_bytes: u64,
    /// Width × height.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Device clock at capture, ms since the epoch (UTC).
    pub captured_at_ms: u64,
    /// The device's UTC offset then, minutes.
    pub utc_offset_min: i32,
    /// When the server stored it.
    pub received_at_ms: u64,
    /// Page n of m.
    pub page: (u32, u32),
    /// `posted`, `handed`, `not-posted`.
    pub kind: String,
    /// The observer's note (as signed).
    pub note: Option<String>,
    /// The observer's own transcription (as signed).
    pub observer_transcription: Option<BTreeMap<String, u64>>,
    /// The device key's fingerprint (first 16 hex digits of its SHA-256).
    pub device_fingerprint: String,
    /// The device's sequence number.
    pub device_seq: u64,
    /// The ed25519 signature, hex.
    pub signature: String,
    /// Index in the public log, once integrated.
    pub log_index: Option<u64>,
    /// Review state.
    pub state: PublicState,
}

impl CaptureView {
    /// The view of a stored capture; `None` if its manifest does not parse (never for a stored
    /// capture, whose manifest was verified on ingest).
    pub fn new(c: &PublicCapture, state: PublicState) -> Option<Self> {
        let m: Manifest = serde_json::from_slice(&c.manifest).ok()?;
        Some(Self {
            id: c.id.to_hex(),
            photo_sha256: c.photo_sha256.to_hex(),
            photo_bytes: c.photo_bytes,
            width: m.photo.width,
            height: m.photo.height,
            captured_at_ms: m.captured_at_ms,
            utc_offset_min: m.utc_offset_min,
            received_at_ms: c.received_at_ms,
            page: (m.page.number, m.page.count),
            kind: serde_json::to_value(m.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            note: m.note,
            observer_transcription: m.transcription,
            device_fingerprint: m.device_key.fingerprint(),
            device_seq: m.seq,
            signature: hex::encode(c.signature),
            log_index: c.log_index,
            state,
        })
    }
}

/// A cached response body with its entity tag.
#[derive(Debug)]
pub struct Cached {
    /// `"…"`, quoted.
    pub etag: String,
    /// Content type.
    pub content_type: &'static str,
    /// The body.
    pub body: actix_web::web::Bytes,
}

struct Views {
    version: u64,
    elections: Option<Arc<Vec<Election>>>,
    views: HashMap<String, Arc<ElectionView>>,
    responses: HashMap<String, Arc<Cached>>,
    response_bytes: usize,
}

/// The public views and the response cache, dropped together whenever storage changes.
pub struct Gallery {
    storage: Arc<dyn GalleryStorage>,
    review: Arc<dyn ReviewStorage>,
    views: RwLock<Views>,
    checked: Mutex<Instant>,
    /// Bumped whenever the cache is dropped: part of every ETag.
    generation: AtomicU64,
    /// Photos in memory.
    pub photos: PhotoCache,
    /// Official results per election, kept while their versions are the same.
    official: Mutex<HashMap<String, Arc<Official>>>,
}

impl Gallery {
    /// A gallery over this storage and review source.
    pub fn new(storage: Arc<dyn GalleryStorage>, review: Arc<dyn ReviewStorage>) -> Self {
        Self {
            storage,
            review,
            views: RwLock::new(Views {
                version: u64::MAX,
                elections: None,
                views: HashMap::new(),
                responses: HashMap::new(),
                response_bytes: 0,
            }),
            checked: Mutex::new(Instant::now() - RECHECK * 2),
            generation: AtomicU64::new(0),
            photos: PhotoCache::default(),
            official: Mutex::default(),
        }
    }

    fn poisoned() -> StorageError {
        StorageError::Corrupt("gallery cache lock poisoned".into())
    }

    /// Drops everything cached if storage changed since the last look (looked at no more
    /// often than every [`RECHECK`]).
    fn refresh(&self) -> Result<(), StorageError> {
        {
            let mut checked = self.checked.lock().map_err(|_| Self::poisoned())?;
            if checked.elapsed() < RECHECK {
                return Ok(());
            }
            *checked = Instant::now();
        }
        let version = self.storage.change_counter()?;
        let stale = self.views.read().map_err(|_| Self::poisoned())?.version != version;
        if stale {
            let mut v = self.views.write().map_err(|_| Self::poisoned())?;
            if v.version != version {
                v.version = version;
                v.elections = None;
                v.views.clear();
                v.responses.clear();
                v.response_bytes = 0;
                self.generation.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Drops every cached view now (after a write this process made and wants seen at once).
    pub fn invalidate(&self) {
        if let Ok(mut checked) = self.checked.lock() {
            *checked = Instant::now() - RECHECK * 2;
        }
    }

    /// The current cache generation (changes whenever cached data is dropped).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Every election.
    pub fn elections(&self) -> Result<Arc<Vec<Election>>, StorageError> {
        self.refresh()?;
        if let Some(e) = &self.views.read().map_err(|_| Self::poisoned())?.elections {
            return Ok(e.clone());
        }
        let list = Arc::new(self.storage.elections()?);
        self.views.write().map_err(|_| Self::poisoned())?.elections = Some(list.clone());
        Ok(list)
    }

    /// The view of one election, or `None` if there is no such election.
    pub fn election(&self, id: &str) -> Result<Option<Arc<ElectionView>>, StorageError> {
        self.refresh()?;
        if let Some(v) = self.views.read().map_err(|_| Self::poisoned())?.views.get(id) {
            return Ok(Some(v.clone()));
        }
        let Some(election) = self.elections()?.iter().find(|e| e.id == id).cloned() else {
            return Ok(None);
        };
        let facts = ReviewFacts::load(&*self.review, id)?;
        let official = self.official(id)?;
        let view = Arc::new(ElectionView::build(&*self.storage, election, facts, &official)?);
        self.views.write().map_err(|_| Self::poisoned())?.views.insert(id.to_owned(), view.clone());
        Ok(Some(view))
    }

    /// The official results of an election, read again only when its versions changed.
    fn official(&self, election: &str) -> Result<Arc<Official>, StorageError> {
        let versions = self.storage.official_versions(election)?;
        let cached = self.official.lock().map_err(|_| Self::poisoned())?.get(election).cloned();
        if let Some(o) = cached.filter(|o| o.versions == versions) {
            return Ok(o);
        }
        let official = Arc::new(Official::load(&*self.storage, election, versions)?);
        self.official
            .lock()
            .map_err(|_| Self::poisoned())?
            .insert(election.to_owned(), official.clone());
        Ok(official)
    }

    /// The public captures of a precinct (not rejected), in the order received.
    pub fn captures(
        &self,
        view: &ElectionView,
        precinct: &str,
    ) -> Result<Vec<CaptureView>, StorageError> {
        // The observer's own figures stay out of the public views until the coordinators' two
        // blind entries are in, so that nobody copies them into an entry (docs/review.md).
        let entered = view
            .transcriptions
            .get(precinct)
            .is_some_and(|t| t.status != crate::storage::review::TranscriptionStatus::Pending);
        Ok(self
            .storage
            .public_captures(&view.election.id, Some(precinct))?
            .iter()
            .filter_map(|c| {
                let state = view.decisions.get(&c.id).copied().unwrap_or(PublicState::Pending);
                (state != PublicState::Rejected).then(|| CaptureView::new(c, state)).flatten()
            })
            .map(|mut c| {
                if !entered {
                    c.observer_transcription = None;
                }
                c
            })
            .collect())
    }

    /// The manifest of a stored capture of this photo.
    pub fn manifest_of_photo(&self, photo: &Sha256Hash) -> Result<Option<Manifest>, StorageError> {
        Ok(self.storage.manifest_of_photo(photo)?.and_then(|m| serde_json::from_slice(&m).ok()))
    }

    /// The stored captures of one precinct with their evidence, rejected ones too (the caller
    /// filters by the view's decisions).
    pub fn precinct_captures(
        &self,
        election: &str,
        precinct: &str,
    ) -> Result<Vec<PublicCapture>, StorageError> {
        self.storage.public_captures(election, Some(precinct))
    }

    /// The official figures of one version.
    pub fn official_figures(&self, election: &str, version: u64) -> Result<Figures, StorageError> {
        self.storage.official_figures(election, version)
    }

    /// Every stored capture of an election with its evidence (rejected ones too: the bulk
    /// evidence export mirrors the log, which holds them all).
    pub fn all_captures(&self, election: &str) -> Result<Vec<PublicCapture>, StorageError> {
        self.storage.public_captures(election, None)
    }

    /// A cached response, or `make`'s, cached under `key` until storage changes.
    pub fn cached<E: From<StorageError>>(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<(&'static str, Vec<u8>), E>,
    ) -> Result<Arc<Cached>, E> {
        self.refresh()?;
        if let Some(c) = self.views.read().map_err(|_| Self::poisoned())?.responses.get(key) {
            return Ok(c.clone());
        }
        let generation = self.generation();
        let (content_type, body) = make()?;
        let etag = format!("\"{}\"", &Sha256Hash::of(&body).to_hex()[..24]);
        let cached =
            Arc::new(Cached { etag, content_type, body: actix_web::web::Bytes::from(body) });
        let mut v = self.views.write().map_err(|_| Self::poisoned())?;
        if self.generation() == generation {
            if v.response_bytes + cached.body.len() > RESPONSE_CACHE_BYTES {
                v.responses.clear();
                v.response_bytes = 0;
            }
            v.response_bytes += cached.body.len();
            v.responses.insert(key.to_owned(), cached.clone());
        }
        Ok(cached)
    }
}
