//! Group commit, shared by both backends: concurrent callers of `commit_capture` are committed
//! together, in one transaction of one round, so that a busy server pays for one durable commit
//! (SQLite's fsync, PostgreSQL's WAL flush) per round rather than per capture.
//!
//! The first caller to find no round under way leads: it takes everything queued, commits it,
//! answers each waiter on its own channel, and goes on while more has queued meanwhile. A round
//! that fails is committed again one capture at a time, so one bad capture fails alone.

use std::sync::{Mutex, mpsc};

use super::StorageError;

/// The queue of a group commit of `T`s, each answered with an `R`.
pub(super) struct GroupCommit<T, R> {
    queue: Mutex<Queue<T, R>>,
}

struct Queue<T, R> {
    /// Waiting for a round, each with where its result goes.
    pending: Vec<(T, mpsc::SyncSender<Result<R, StorageError>>)>,
    /// Whether a thread is committing rounds.
    leading: bool,
}

impl<T, R> Default for GroupCommit<T, R> {
    fn default() -> Self {
        Self { queue: Mutex::new(Queue { pending: Vec::new(), leading: false }) }
    }
}

impl<T, R> GroupCommit<T, R> {
    /// Commits `item` in a round with whatever else is queued: `commit` commits a round (in one
    /// transaction) and answers its results in order. Returns `item`'s result.
    pub(super) fn submit(
        &self,
        item: T,
        commit: impl Fn(&[T]) -> Result<Vec<R>, StorageError>,
    ) -> Result<R, StorageError> {
        let poisoned = || StorageError::Corrupt("lock poisoned".into());
        // Each waiter is woken by its own channel, once its round is committed: no thread wakes
        // for another's round.
        let (done, result) = mpsc::sync_channel(1);
        let mut q = self.queue.lock().map_err(|_| poisoned())?;
        q.pending.push((item, done));
        if !q.leading {
            q.leading = true;
            loop {
                let round = std::mem::take(&mut q.pending);
                if round.is_empty() {
                    q.leading = false;
                    break;
                }
                drop(q);
                let (items, senders): (Vec<T>, Vec<_>) = round.into_iter().unzip();
                for (result, sender) in round_results(&items, &commit).into_iter().zip(senders) {
                    // A waiter that is gone (it cannot be: it waits below) needs no answer.
                    let _ = sender.send(result);
                }
                q = self.queue.lock().map_err(|_| poisoned())?;
            }
        }
        drop(q);
        result
            .recv()
            .unwrap_or_else(|_| Err(StorageError::Corrupt("a commit round lost a capture".into())))
    }
}

/// One round: the results, in the order of `round`; a failed round again one by one.
fn round_results<T, R>(
    round: &[T],
    commit: &impl Fn(&[T]) -> Result<Vec<R>, StorageError>,
) -> Vec<Result<R, StorageError>> {
    match commit(round) {
        Ok(results) if results.len() == round.len() => results.into_iter().map(Ok).collect(),
        Ok(_) => round
            .iter()
            .map(|_| Err(StorageError::Corrupt("a commit round lost a capture".into())))
            .collect(),
        Err(e) if round.len() == 1 => vec![Err(e)],
        Err(e) => {
            tracing::warn!(error = %e, captures = round.len(), "group commit failed; one by one");
            round
                .iter()
                .map(|item| {
                    commit(std::slice::from_ref(item)).and_then(|mut r| {
                        r.pop().ok_or_else(|| StorageError::Corrupt("no receipt".into()))
                    })
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Callers arriving while a round commits are committed together in the next round, and
    /// every caller gets its own result.
    #[test]
    fn waiting_callers_share_a_round_and_get_their_own_results() {
        let group: Arc<GroupCommit<u32, u32>> = Arc::default();
        let rounds = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16u32)
            .map(|i| {
                let (group, rounds) = (group.clone(), rounds.clone());
                std::thread::spawn(move || {
                    group.submit(i, |items| {
                        rounds.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        Ok(items.iter().map(|i| i * 10).collect())
                    })
                })
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            assert_eq!(t.join().unwrap().unwrap(), i as u32 * 10);
        }
        let rounds = rounds.load(Ordering::SeqCst);
        assert!(rounds < 16, "16 callers in {rounds} rounds: none shared one");
    }

    /// A failed round is committed again one by one: only the bad item fails.
    #[test]
    fn a_failed_round_fails_only_its_bad_item() {
        let results = round_results(&[1u32, 2, 3], &|items: &[u32]| {
            if items.contains(&2) {
                return Err(StorageError::Corrupt("two".into()));
            }
            Ok(items.to_vec())
        });
        assert_eq!(results.len(), 3);
        assert_eq!(*results[0].as_ref().unwrap(), 1);
        assert!(results[1].is_err());
        assert_eq!(*results[2].as_ref().unwrap(), 3);
    }
}
