//! Thumbnails of stored photos, and the server-wide bound on decoding.
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
//! refuses that photo; its thread lives on. A thumbnail is made when its photo
//! is uploaded (a photo whose thumbnail cannot be made is refused there and never stored), and
//! kept under `<data dir>/thumbs/`; it is made again only if that file is gone.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use hattama_core::evidence::{MediaType, Sha256Hash};
use hattama_core::thumbnail::{self, DECODE_BUDGET, ThumbnailError};

use crate::error::ApiError;

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

/// A photo to render, and where the answer goes.
struct Job {
    photo: Vec<u8>,
    media_type: MediaType,
    orientation: u8,
    reply: mpsc::Sender<Result<Vec<u8>, ThumbnailError>>,
}

/// The thumbnails of stored photos, the decode slots and the decode threads.
pub struct Thumbnails {
    dir: PathBuf,
    slots: Slots,
    jobs: mpsc::Sender<Job>,
}

impl Thumbnails {
    /// Thumbnails kept in `dir`, with at most `max_decodes` decodes at once, each on one of as
    /// many threads (which end when this is dropped).
    pub fn new(dir: PathBuf, max_decodes: usize) -> std::io::Result<Self> {
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
                            thumbnail::MAX_SIDE,
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
        Ok(Self { dir, slots, jobs })
    }

    fn file(&self, sha: &Sha256Hash) -> PathBuf {
        self.dir.join(format!("{}.jpg", sha.to_hex()))
    }

    /// The kept thumbnail of a photo, if there is one.
    pub fn cached(&self, sha: &Sha256Hash) -> Option<Vec<u8>> {
        std::fs::read(self.file(sha)).ok()
    }

    /// Makes a thumbnail, waiting for a decode slot (a blocking call). A photo whose thumbnail
    /// cannot be made is a 422 (`photo_undecodable`); no free slot in time is a 503.
    pub fn make(
        &self,
        photo: &[u8],
        media_type: MediaType,
        orientation: u8,
    ) -> Result<Vec<u8>, ApiError> {
        let Some(_slot) = self.slots.take(SLOT_WAIT) else {
            let mut e = ApiError::new(503, "busy", "the server is busy decoding photos; retry");
            e.retry_after = Some(2);
            return Err(e);
        };
        let (reply, answer) = mpsc::channel();
        let job = Job { photo: photo.to_vec(), media_type, orientation, reply };
        let gone = || ApiError::internal(&std::io::Error::other("the decode threads are gone"));
        self.jobs.send(job).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?.map_err(|e| {
            let message = match e {
                ThumbnailError::TooLarge { .. } => {
                    format!("{e}: a phone photo never needs that much; send the camera's own JPEG")
                }
                ThumbnailError::Undecodable(_) => {
                    format!("{e}: the file is damaged; take the photo again")
                }
            };
            ApiError::new(422, "photo_undecodable", message)
        })
    }

    /// Keeps a thumbnail: written whole under a temporary name, then renamed, so a reader never
    /// sees half a file. Not fsynced: it is derived, and made again if lost.
    pub fn store(&self, sha: &Sha256Hash, thumb: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!("{}.{:016x}.tmp", sha.to_hex(), rand::random::<u64>()));
        std::fs::write(&tmp, thumb)?;
        std::fs::rename(&tmp, self.file(sha))
    }
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
