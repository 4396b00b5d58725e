//! The worker pool every job of the worker runs on (re-wrap, inventory,
//! tree encryption and decryption): a walker thread feeds items through a
//! bounded queue, in chunks, to worker threads whose results add up.

use super::store::{EnvelopeStore, ItemError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Per-worker results that add up.
pub(crate) trait Merge: Default {
    /// Adds another worker's result to this one.
    fn merge(&mut self, other: Self);
    /// Records a worker thread that panicked.
    fn worker_panicked(&mut self);
}

/// The number of worker threads for `jobs` (0: two per core, as workers
/// mostly wait on I/O or a remote KMS).
pub(crate) fn worker_count(jobs: usize) -> usize {
    if jobs > 0 {
        return jobs;
    }
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

/// Items travel from the walker to the workers in chunks of up to this many:
/// one queue operation (and at most one wake-up) per chunk instead of per
/// item. The walker sends a shorter chunk whenever the queue is empty, so
/// idle workers are never kept waiting for a chunk to fill.
pub(crate) const FEED_CHUNK: usize = 64;

/// The largest chunk for `jobs` workers of `store`: the store's chunk when
/// the workers are about as many as the cores; single items when there are
/// many more workers than cores, which wait on a remote KMS and need every
/// item spread out.
pub(crate) fn feed_chunk<S: EnvelopeStore>(store: &S, jobs: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    if jobs > 2 * cores {
        1
    } else {
        store.feed_chunk().max(1)
    }
}

/// The workers' end of the queue from the walker.
struct Feed<T> {
    /// `None` once the workers are done: a walker still sending then stops
    /// (workers may stop before the input ends, see `RewrapOptions::interrupt`).
    rx: Mutex<Option<std::sync::mpsc::Receiver<Vec<T>>>>,
    /// Chunks sent and not yet taken.
    queued: AtomicUsize,
}

/// One worker's place in the [`Feed`]: the rest of the chunk it took.
pub(crate) struct Cursor<'a, T> {
    feed: &'a Feed<T>,
    chunk: std::vec::IntoIter<T>,
}

impl<T> Iterator for Cursor<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.chunk.next() {
                return Some(item);
            }
            let rx = self
                .feed
                .rx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.chunk = rx.as_ref()?.recv().ok()?.into_iter();
            self.feed.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Feeds `items` through a bounded queue, in chunks of up to `max` items, to
/// `jobs` workers; merges their results.
pub(crate) fn run_workers<T, I, R, W>(jobs: usize, max: usize, items: I, worker: W) -> R
where
    T: Send,
    I: Iterator<Item = Result<T, ItemError>> + Send,
    R: Merge + Send,
    W: Fn(&mut Cursor<'_, Result<T, ItemError>>) -> R + Sync,
{
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<T, ItemError>>>(16);
    let feed = Feed {
        rx: Mutex::new(Some(rx)),
        queued: AtomicUsize::new(0),
    };
    std::thread::scope(|s| {
        let feed = &feed;
        s.spawn(move || {
            let mut chunk = Vec::with_capacity(max);
            for item in items {
                chunk.push(item);
                if chunk.len() >= max || feed.queued.load(Ordering::Acquire) == 0 {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(max));
                    feed.queued.fetch_add(1, Ordering::AcqRel);
                    if tx.send(full).is_err() {
                        return;
                    }
                }
            }
            if !chunk.is_empty() {
                feed.queued.fetch_add(1, Ordering::AcqRel);
                let _ = tx.send(chunk);
            }
        });
        let handles: Vec<_> = (0..jobs)
            .map(|_| {
                s.spawn(|| {
                    worker(&mut Cursor {
                        feed,
                        chunk: Vec::new().into_iter(),
                    })
                })
            })
            .collect();
        let mut total = R::default();
        for h in handles {
            match h.join() {
                Ok(r) => total.merge(r),
                Err(_) => total.worker_panicked(),
            }
        }
        // Workers that stopped early leave the walker blocked on a full
        // queue: dropping its other end ends the walk.
        feed.rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        total
    })
}
