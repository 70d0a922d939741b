//! Thumbnails and medium renditions of stored photos, and the server-wide bound on decoding.
//!
//! Every decode of a photo's pixels on the server goes through [`Thumbnails::make`]: it takes
//! one of a fixed number of decode slots (`limits.max_decodes`, held here in the application's
//! state) and hands the photo to one of as many decode threads, and the core's decode keeps
//! each within its memory budget (`hattama_core::thumbnail::DECODE_BUDGET`). So all decodes
//! together never hold more than `max_decodes` budgets, however many requests ask at once.
//! The decodes run on their own threads, not on the request threads, because the allocator
//! keeps freed memory per thread: decodes spread over dozens of request threads would each
//! leave a decode's worth of memory behind, and the process would grow with the number of
//! threads rather than with the number of decodes. A decoder that panics on a hostile photo
//! refuses that photo; its thread lives on. A thumbnail is made on its first request or, with
//! `limits.thumbnail_at_upload`, when its photo is uploaded (a photo whose thumbnail cannot be
//! made is then refused and never stored), and kept as the object `thumbs/<sha256>.jpg`
//! (through the object boundary, `crate::objects`: with the local store, under
//! `<data dir>/thumbs/`); it is made again only if that object is gone. The medium rendition is
//! made on its first request, by the same decode, and kept as `medium/<sha256>.jpg`. A
//! failure is kept beside them (`<sha256>.failed`).

use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use hattama_core::evidence::{MediaType, PhotoInfo, Sha256Hash};
use hattama_core::thumbnail::{self, DECODE_BUDGET, ThumbnailError};

use crate::error::ApiError;
use crate::objects::{ObjectBackend, ObjectError, ObjectKey, PutOptions};

/// How long a request waits for a decode slot before it is told to retry.
const SLOT_WAIT: Duration = Duration::from_secs(20);

/// At most `max` decodes at once (a counting semaphore).
struct Slots {
    max: usize,
    busy: Mutex<usize>,
    freed: Condvar,
}

/// A decode slot, given back when dropped.
struct Slot<'a>(&'a Slots);

impl Slots {
    fn take(&self, wait: Duration) -> Option<Slot<'_>> {
        let deadline = Instant::now() + wait;
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy >= self.max {
            let left = deadline.checked_duration_since(Instant::now())?;
            busy = self.freed.wait_timeout(busy, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        *busy += 1;
        Some(Slot(self))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().unwrap_or_else(|p| p.into_inner());
        *busy -= 1;
        self.0.freed.notify_one();
    }
}

/// A derived, reduced JPEG of a stored photo. Not evidence: the evidence is the photo itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rendition {
    /// At most [`thumbnail::MAX_SIDE`] pixels a side, for lists and galleries.
    Thumb,
    /// At most [`thumbnail::MEDIUM_SIDE`] pixels a side: readable on a phone, a fraction of the
    /// original's bytes.
    Medium,
}

impl Rendition {
    /// The folder of its objects (`thumbs/`, `medium/`), and the ETag suffix.
    pub fn name(self) -> &'static str {
        match self {
            Rendition::Thumb => "thumbs",
            Rendition::Medium => "medium",
        }
    }

    /// The most pixels a side.
    pub fn side(self) -> u32 {
        match self {
            Rendition::Thumb => thumbnail::MAX_SIDE,
            Rendition::Medium => thumbnail::MEDIUM_SIDE,
        }
    }
}

/// A photo to render, and where the answer goes.
struct Job {
    photo: Vec<u8>,
    side: u32,
    media_type: MediaType,
    orientation: u8,
    reply: mpsc::Sender<Result<Vec<u8>, ThumbnailError>>,
}

/// The renditions of stored photos, the decode slots and the decode threads.
pub struct Thumbnails {
    /// Where renditions are kept, under a folder per kind.
    objects: Arc<dyn ObjectBackend>,
    /// Whether uploads wait for their thumbnail (`limits.thumbnail_at_upload`).
    at_upload: bool,
    slots: Slots,
    jobs: mpsc::Sender<Job>,
}

impl Thumbnails {
    /// Renditions kept in `objects`, with at most `max_decodes` decodes at once, each on one of
    /// as many threads (which end when this is dropped).
    pub fn new(
        objects: Arc<dyn ObjectBackend>,
        max_decodes: usize,
        at_upload: bool,
    ) -> std::io::Result<Self> {
        let max = max_decodes.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..max {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("decode-{i}")).spawn(move || {
                loop {
                    let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(job) = job else { return };
                    let rendered = std::panic::catch_unwind(|| {
                        thumbnail::render(
                            &job.photo,
                            job.media_type,
                            job.orientation,
                            job.side,
                            DECODE_BUDGET,
                        )
                    })
                    .unwrap_or_else(|_| {
                        Err(ThumbnailError::Undecodable("the decoder failed on it".into()))
                    });
                    drop(job.photo);
                    let _ = job.reply.send(rendered);
                }
            })?;
        }
        let slots = Slots { max, busy: Mutex::new(0), freed: Condvar::new() };
        Ok(Self { objects, at_upload, slots, jobs })
    }

    fn key(sha: &Sha256Hash, kind: Rendition, suffix: &str) -> Result<ObjectKey, ObjectError> {
        ObjectKey::new(format!("{}/{}.{suffix}", kind.name(), sha.to_hex()))
    }

    /// The thumbnail of a photo being uploaded, or why it is refused (422 `photo_undecodable`),
    /// before its receipt: a photo whose thumbnail cannot be made is never stored. A PNG is
    /// decoded now, within the decode slots (PNGs are rare from phones, and a damaged one
    /// cannot be rendered); a JPEG only has its headers checked against the decode budget
    /// (`thumbnail::jpeg_fits`, no pixel decoded), since its pixels are decoded leniently and
    /// always yield a thumbnail, unless `limits.thumbnail_at_upload` asks for it now too.
    pub fn at_upload(
        &self,
        photo: &[u8],
        media_type: MediaType,
        orientation: u8,
    ) -> Result<Option<Vec<u8>>, ApiError> {
        if media_type == MediaType::Png || self.at_upload {
            return self.make(photo, media_type, orientation, Rendition::Thumb).map(Some);
        }
        thumbnail::jpeg_fits(photo, thumbnail::MAX_SIDE, DECODE_BUDGET).map_err(refusal)?;
        Ok(None)
    }

    /// The kept rendition of a photo, if there is one.
    pub fn cached(&self, sha: &Sha256Hash, kind: Rendition) -> Result<Option<Vec<u8>>, ApiError> {
        let key = Self::key(sha, kind, "jpg").map_err(internal)?;
        self.objects.get_opt(&key).map_err(internal)
    }

    /// A rendition of a stored photo: the kept one; else, if it failed before, that failure
    /// again without decoding (a negative cache: a photo that cannot be rendered is never
    /// decoded twice, however often it is asked for); else made now from what `load` gives
    /// (the photo, its media type and orientation) and kept, or its failure kept.
    pub fn rendition(
        &self,
        sha: &Sha256Hash,
        kind: Rendition,
        load: impl FnOnce() -> Result<(Vec<u8>, PhotoInfo), ApiError>,
    ) -> Result<Vec<u8>, ApiError> {
        if let Some(bytes) = self.cached(sha, kind)? {
            return Ok(bytes);
        }
        let failed = Self::key(sha, kind, "failed").map_err(internal)?;
        if let Some(message) = self.objects.get_opt(&failed).map_err(internal)? {
            let message = String::from_utf8_lossy(&message).into_owned();
            return Err(ApiError::new(422, "photo_undecodable", message));
        }
        let (photo, info) = load()?;
        // A rendition is never a bigger file than the photo itself: a photo already upright and
        // within the rendition's size is served as it is, without a decode; so is one whose
        // re-encoding came out no smaller. (A photo to be turned upright is always re-encoded:
        // its stripped bytes carry no orientation a browser would apply.)
        let upright = info.orientation == 1;
        if upright && info.width.max(info.height) <= kind.side() {
            return Ok(photo);
        }
        match self.make(&photo, info.media_type, info.orientation, kind) {
            Ok(reduced) => {
                let kept = if upright && reduced.len() >= photo.len() { photo } else { reduced };
                self.store(sha, kind, &kept).map_err(internal)?;
                Ok(kept)
            }
            Err(e) if e.status.as_u16() == 422 => {
                if let Err(kept) = self.keep(&failed, e.message.as_bytes()) {
                    tracing::warn!(error = %kept, "a rendition's failure could not be kept");
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Makes a rendition, waiting for a decode slot (a blocking call). A photo whose rendition
    /// cannot be made is a 422 (`photo_undecodable`); no free slot in time is a 503.
    pub fn make(
        &self,
        photo: &[u8],
        media_type: MediaType,
        orientation: u8,
        kind: Rendition,
    ) -> Result<Vec<u8>, ApiError> {
        let Some(_slot) = self.slots.take(SLOT_WAIT) else {
            let mut e = ApiError::new(503, "busy", "the server is busy decoding photos; retry");
            e.retry_after = Some(2);
            return Err(e);
        };
        let (reply, answer) = mpsc::channel();
        let job = Job { photo: photo.to_vec(), side: kind.side(), media_type, orientation, reply };
        let gone = || ApiError::internal(&std::io::Error::other("the decode threads are gone"));
        self.jobs.send(job).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?.map_err(refusal)
    }

    /// Keeps a rendition: a reader never sees half of it. Not durable: it is derived, and made
    /// again if lost.
    pub fn store(
        &self,
        sha: &Sha256Hash,
        kind: Rendition,
        bytes: &[u8],
    ) -> Result<(), ObjectError> {
        self.keep(&Self::key(sha, kind, "jpg")?, bytes)
    }

    /// Keeps a derived object. Renditions are made by one deterministic decode, so a second
    /// writer (two requests at once) writes the same bytes; should another version of the
    /// server have kept other bytes, the kept rendition stays and this one is only served.
    fn keep(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), ObjectError> {
        match self.objects.put(key, bytes, PutOptions::DERIVED) {
            Err(ObjectError::Conflict(_)) => Ok(()),
            other => other,
        }
    }
}

/// An object store's failure, as the answer to a request (503 when a retry may help).
fn internal(e: ObjectError) -> ApiError {
    crate::storage::StorageError::from(e).into()
}

/// The answer to a photo whose rendition cannot be made: 422 `photo_undecodable`, saying what
/// to do.
fn refusal(e: ThumbnailError) -> ApiError {
    let message = match e {
        ThumbnailError::TooLarge { .. } => {
            format!("{e}: a phone photo never needs that much; send the camera's own JPEG")
        }
        ThumbnailError::Undecodable(_) => format!("{e}: the file is damaged; take the photo again"),
    };
    ApiError::new(422, "photo_undecodable", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_bound_concurrency_and_time_out() {
        let slots = Slots { max: 2, busy: Mutex::new(0), freed: Condvar::new() };
        let a = slots.take(Duration::ZERO).expect("first");
        let _b = slots.take(Duration::ZERO).expect("second");
        assert!(slots.take(Duration::from_millis(20)).is_none(), "a third must wait");
        drop(a);
        assert!(slots.take(Duration::ZERO).is_some(), "a freed slot is taken again");
    }
}
