//! The group commit of durable appends: one `fdatasync` at a time, and
//! each covers every write made before it started.
//!
//! A write takes a ticket (the count of writes so far) under the chain's
//! lock, and its caller is answered only once a sync that started after
//! that write has finished. Two kinds of caller share the syncs:
//!
//! - a blocking caller (the CLI, keystore writes, the server's blocking
//!   pool) writes its records at once and then waits ([`GroupSync::wait`]):
//!   it runs the sync itself if none is running (it becomes the leader), or
//!   waits for the running one and then for the next;
//! - a caller inside a [`defer_durability`] scope (the server's connection
//!   tasks, tree encryption) does not even write: its records join this
//!   log's queue ([`GroupSync::enqueue`]) and it gets a [`Batch`] to wait
//!   for. The log's syncer thread writes everything queued with one lock,
//!   one `write` and one checkpoint, then syncs it, while the callers'
//!   threads go on serving other requests ([`Durability::wait`] awaits it
//!   without blocking the thread). A blocking wait, a direct write or a
//!   read of the trail writes the queue first, so records reach the file in
//!   the order they were appended.
//!
//! Records appended while a sync runs are covered by the next one, so N
//! concurrent requests cost about two syncs and two writes, not N. A failed
//! write fails the batches it held; a failed sync fails every waiter and
//! every later append of the handle (the kernel may have dropped the dirty
//! pages, so a later sync could succeed without them).

use super::record::AuditRecord;
use super::{io_error, AuditError};
use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use tokio::sync::oneshot;

pub(super) struct GroupSync {
    path: PathBuf,
    state: Mutex<SyncState>,
    /// Signalled after every sync, and when an async waiter wants one.
    done: Condvar,
    /// Async waiters: their batches and how to wake them. Each is woken
    /// once, when its batches are durable (or failed), not at every sync.
    waiters: Mutex<Vec<Waiter>>,
    /// Records appended in [`defer_durability`] scopes, not written yet.
    queue: Mutex<Vec<Queued>>,
    /// Writes the queue: the log that owns this group commit.
    writer: OnceLock<Weak<dyn WriteQueue>>,
}

/// The log behind a [`GroupSync`]: writes the queued records (taking its
/// chain's lock) and resolves their batches.
pub(super) trait WriteQueue: Send + Sync {
    fn write_queue(&self);
}

/// Records waiting in the queue, and the batch their caller waits for.
pub(super) struct Queued {
    pub(super) records: Vec<AuditRecord>,
    pub(super) batch: Arc<Batch>,
}

/// The outcome of writing queued records: the ticket of the write that
/// held them, or why it failed.
#[derive(Default)]
pub(super) struct Batch(OnceLock<Result<u64, WriteFailure>>);

/// Why a write of queued records failed: the error's text, and its OS
/// error code if it had one (so a caller still tells ENOSPC apart).
#[derive(Debug, Clone)]
pub(super) struct WriteFailure {
    pub(super) message: String,
    pub(super) os_error: Option<i32>,
}

impl WriteFailure {
    pub(super) fn of(e: &AuditError) -> WriteFailure {
        let os_error = match e {
            AuditError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        };
        WriteFailure {
            message: e.to_string(),
            os_error,
        }
    }
}

impl Batch {
    /// Sets the outcome (once; a batch is written by exactly one write).
    pub(super) fn resolve(&self, outcome: Result<u64, WriteFailure>) {
        let _ = self.0.set(outcome);
    }

    fn outcome(&self) -> Option<&Result<u64, WriteFailure>> {
        self.0.get()
    }
}

struct SyncState {
    /// The active audit file, duplicated, so a sync runs without the
    /// chain's lock. Replaced when the active file is retired (see
    /// [`GroupSync::set_file`]).
    file: Arc<File>,
    /// Writes made (tickets handed out).
    written: u64,
    /// Writes known to be on stable storage.
    durable: u64,
    /// The highest ticket an async waiter waits for.
    wanted: u64,
    /// Requests from async waiters to write the queue (and sync it) that
    /// the syncer has not taken up yet.
    flush_requests: u64,
    /// A sync is running.
    syncing: bool,
    /// The syncer thread runs.
    syncer: bool,
    /// The handle is dropped: the syncer thread ends.
    closing: bool,
    /// `fdatasync` calls made.
    syncs: u64,
    /// Why a sync failed; fails every later wait (fails closed).
    failed: Option<String>,
}

/// A waiter: the batches it waits for and its wake-up.
struct Waiter {
    batches: Vec<Arc<Batch>>,
    wake: Wake,
}

/// How a waiter is woken: an async task, or a blocked thread.
enum Wake {
    Async(oneshot::Sender<Result<(), AuditError>>),
    Blocking(std::sync::mpsc::SyncSender<Result<(), AuditError>>),
}

impl Wake {
    fn send(self, outcome: Result<(), AuditError>) {
        match self {
            Wake::Async(wake) => {
                let _ = wake.send(outcome);
            }
            Wake::Blocking(wake) => {
                let _ = wake.send(outcome);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GroupSync {
    pub(super) fn new(file: File, path: &Path) -> Arc<GroupSync> {
        Arc::new(GroupSync {
            path: path.to_path_buf(),
            state: Mutex::new(SyncState {
                file: Arc::new(file),
                written: 0,
                durable: 0,
                wanted: 0,
                flush_requests: 0,
                syncing: false,
                syncer: false,
                closing: false,
                syncs: 0,
                failed: None,
            }),
            done: Condvar::new(),
            waiters: Mutex::new(Vec::new()),
            queue: Mutex::new(Vec::new()),
            writer: OnceLock::new(),
        })
    }

    /// Makes `file` the one later syncs cover: the new active file, after
    /// the old one was retired. Call it under the chain's lock, before any
    /// write to `file`, and only once every write to the old file is on
    /// stable storage (the retiring writer synced it): a sync that began
    /// before still covers the old file's writes, and every ticket handed
    /// out later is a write to `file`.
    pub(super) fn set_file(&self, file: File) {
        lock(&self.state).file = Arc::new(file);
    }

    /// Names the log that writes this group commit's queue.
    pub(super) fn set_writer(&self, writer: Weak<dyn WriteQueue>) {
        let _ = self.writer.set(writer);
    }

    /// Queues `records` for the syncer (or the next write) to write; the
    /// returned batch tells when they are written and with which ticket.
    pub(super) fn enqueue(&self, records: Vec<AuditRecord>) -> Arc<Batch> {
        let batch = Arc::new(Batch::default());
        lock(&self.queue).push(Queued {
            records,
            batch: Arc::clone(&batch),
        });
        batch
    }

    /// Takes every queued record, oldest first; call it under the chain's
    /// lock, right before the write that will hold them.
    pub(super) fn take_queue(&self) -> Vec<Queued> {
        std::mem::take(&mut *lock(&self.queue))
    }

    /// Has the owning log write the queue now, on this thread.
    fn write_queue(&self) {
        if let Some(writer) = self.writer.get().and_then(Weak::upgrade) {
            writer.write_queue();
        }
    }

    /// The ticket of a write just made; call it under the chain's lock, so
    /// tickets follow the order of writes.
    pub(super) fn ticket(&self) -> u64 {
        let mut state = lock(&self.state);
        state.written += 1;
        state.written
    }

    fn failed(&self, why: &str) -> AuditError {
        AuditError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(format!("an earlier fdatasync failed ({why})")),
        }
    }

    /// Waits until the write with `ticket` is on stable storage, running
    /// the sync itself if no one else is (the leader).
    pub(super) fn wait(&self, ticket: u64) -> Result<(), AuditError> {
        let mut state = lock(&self.state);
        loop {
            if let Some(why) = &state.failed {
                return Err(self.failed(why));
            }
            if state.durable >= ticket {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .done
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let result;
            (state, result) = self.run_sync(state);
            result.map_err(io_error(&self.path))?;
        }
    }

    /// Runs one sync covering every write made so far; the state lock is
    /// released while it runs.
    fn run_sync<'a>(
        &'a self,
        mut state: MutexGuard<'a, SyncState>,
    ) -> (MutexGuard<'a, SyncState>, std::io::Result<()>) {
        state.syncing = true;
        let upto = state.written;
        let file = Arc::clone(&state.file);
        drop(state);
        let result = file.sync_data();
        let mut state = lock(&self.state);
        state.syncing = false;
        state.syncs += 1;
        match &result {
            Ok(()) => state.durable = state.durable.max(upto),
            Err(e) => state.failed = Some(e.to_string()),
        }
        self.settle(&state);
        self.done.notify_all();
        (state, result)
    }

    /// Asks the syncer thread to write the queue and sync every write made
    /// so far (starting the thread on first use).
    fn request(self: &Arc<Self>) -> Result<(), AuditError> {
        self.request_locked(&mut lock(&self.state))
    }

    /// [`GroupSync::request`] under the state lock. Only the first request
    /// since the syncer last took them wakes it: a later one finds it
    /// awake (or syncing, and it looks again when the sync ends).
    fn request_locked(self: &Arc<Self>, state: &mut SyncState) -> Result<(), AuditError> {
        state.flush_requests += 1;
        if !state.syncer {
            let sync = Arc::clone(self);
            std::thread::Builder::new()
                .name("rewrap-audit-sync".into())
                .spawn(move || sync.syncer())
                .map_err(io_error(&self.path))?;
            state.syncer = true;
        }
        if state.flush_requests == 1 {
            self.done.notify_all();
        }
        Ok(())
    }

    /// The syncer thread: when an async waiter asks, writes the queue
    /// (everything appended since the last time, in one write), then syncs
    /// every write made so far; never while another sync runs.
    fn syncer(&self) {
        let mut state = lock(&self.state);
        loop {
            if state.failed.is_some() {
                break;
            }
            if state.flush_requests > 0 && !state.syncing {
                state.flush_requests = 0;
                drop(state);
                self.write_queue();
                state = lock(&self.state);
                state.wanted = state.wanted.max(state.written);
                // Wakes the waiters of batches already durable, or whose
                // write failed (nothing to sync for them).
                self.settle(&state);
                continue;
            }
            if state.wanted > state.durable && !state.syncing {
                (state, _) = self.run_sync(state);
                continue;
            }
            if state.closing {
                break;
            }
            state = self
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.syncer = false;
        if state.failed.is_none() && state.closing {
            // The handle is gone; whoever still waits hears it.
            state.failed = Some("the audit log was closed".into());
            self.settle(&state);
            state.failed = None;
        }
    }

    /// The outcome for a waiter on `batches` once they are all written and
    /// durable, or one's write or a sync failed; `None` while it must wait.
    fn outcome(&self, state: &SyncState, batches: &[Arc<Batch>]) -> Option<Result<(), AuditError>> {
        match (&state.failed, written(self, batches)) {
            (Some(why), _) => Some(Err(self.failed(why))),
            (None, Some(Err(e))) => Some(Err(e)),
            (None, Some(Ok(ticket))) if state.durable >= ticket => Some(Ok(())),
            _ => None,
        }
    }

    /// Adds a waiter on `batches` and asks the syncer to write and sync
    /// them, or answers it now if there is nothing to wait for (its batches
    /// already durable, or failed). Under the state lock, so no sync
    /// settles in between without seeing it; only this waiter is looked
    /// at, not the list.
    fn add_waiter(
        self: &Arc<Self>,
        batches: Vec<Arc<Batch>>,
        wake: Wake,
    ) -> Result<(), AuditError> {
        let mut state = lock(&self.state);
        if let Some(outcome) = self.outcome(&state, &batches) {
            wake.send(outcome);
            return Ok(());
        }
        lock(&self.waiters).push(Waiter { batches, wake });
        self.request_locked(&mut state)
    }

    /// Wakes every async waiter whose batches are all written and durable
    /// (or whose write or a sync failed); the others keep waiting. Called
    /// under the state lock after every sync and queue write.
    fn settle(&self, state: &SyncState) {
        let mut waiters = lock(&self.waiters);
        if waiters.is_empty() {
            return;
        }
        let mut i = 0;
        while i < waiters.len() {
            match self.outcome(state, &waiters[i].batches) {
                Some(outcome) => {
                    let waiter = waiters.swap_remove(i);
                    waiter.wake.send(outcome);
                }
                None => i += 1,
            }
        }
    }

    /// Registers an async waiter for `batches` and asks the syncer to write
    /// and sync them; the receiver gets the outcome.
    fn register(
        self: &Arc<Self>,
        batches: Vec<Arc<Batch>>,
    ) -> Result<oneshot::Receiver<Result<(), AuditError>>, AuditError> {
        let (wake, woken) = oneshot::channel();
        self.add_waiter(batches, Wake::Async(wake))?;
        Ok(woken)
    }

    /// Registers a blocked thread as the waiter for `batches` and asks the
    /// syncer to write and sync them; the receiver gets the outcome. The
    /// syncer wakes exactly the waiters whose batches are durable, so
    /// concurrent blocked callers neither contend for a lock after each
    /// sync nor wake for a sync that does not cover them.
    fn register_blocking(
        self: &Arc<Self>,
        batches: Vec<Arc<Batch>>,
    ) -> Result<std::sync::mpsc::Receiver<Result<(), AuditError>>, AuditError> {
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        self.add_waiter(batches, Wake::Blocking(wake))?;
        Ok(woken)
    }

    /// Ends the syncer thread once nothing is wanted (the handle is dropped).
    pub(super) fn close(&self) {
        lock(&self.state).closing = true;
        self.done.notify_all();
    }

    /// `fdatasync` calls made for durable appends.
    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        lock(&self.state).syncs
    }
}

/// Appends awaiting their write and sync, per log: the log's group commit
/// and the batches queued there.
type Pending = Vec<(Arc<GroupSync>, Vec<Arc<Batch>>)>;

/// What a scope defers: the whole write, or only the sync.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deferred {
    /// [`defer_durability`]: appends are queued, written and synced later.
    Write,
    /// [`defer_sync`]: appends are written at once, synced later.
    Sync,
}

/// A scope's kind and the appends it awaits.
type Scope = (Deferred, Pending);

thread_local! {
    /// The appends of the current [`defer_durability`] or [`defer_sync`]
    /// scope, if any.
    static DEFERRED: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Adds `batch` of `sync` to a scope's pending list.
fn add(list: &mut Pending, sync: &Arc<GroupSync>, batch: Arc<Batch>) {
    match list.iter_mut().find(|(s, _)| Arc::ptr_eq(s, sync)) {
        Some((_, batches)) => batches.push(batch),
        None => list.push((Arc::clone(sync), vec![batch])),
    }
}

/// Queues `records` in `sync` and hands the wait for them to the current
/// thread's [`defer_durability`] scope; gives the records back if there is
/// no such scope (the caller writes them, then calls [`defer_written`]).
pub(super) fn defer(
    sync: &Arc<GroupSync>,
    records: Vec<AuditRecord>,
) -> Result<(), Vec<AuditRecord>> {
    DEFERRED.with(|deferred| match deferred.borrow_mut().as_mut() {
        Some((Deferred::Write, list)) => {
            let batch = sync.enqueue(records);
            add(list, sync, batch);
            Ok(())
        }
        _ => Err(records),
    })
}

/// Whether the current thread is in a [`defer_sync`] scope (whose appends
/// are written at once).
pub(super) fn in_sync_scope() -> bool {
    DEFERRED.with(|deferred| matches!(deferred.borrow().as_ref(), Some((Deferred::Sync, _))))
}

/// A durable append outside any scope, by a caller that blocks until it
/// is durable: the records join the queue like a deferred append's, and
/// the caller blocks until the syncer thread has written the queue (one
/// `flock`, one `write`, one checkpoint for every caller queued) and
/// synced it, and wakes this caller alone.
pub(super) fn append_blocking(
    sync: &Arc<GroupSync>,
    records: Vec<AuditRecord>,
) -> Result<(), AuditError> {
    let batch = sync.enqueue(records);
    let woken = sync.register_blocking(vec![batch])?;
    match woken.recv() {
        Ok(outcome) => outcome,
        // Cannot happen: the syncer settles every waiter before it ends,
        // and the handle (which ends it) outlives this call.
        Err(_) => Err(sync.failed("the group commit ended")),
    }
}

/// Hands the sync of a write just made (`ticket`) to the current thread's
/// [`defer_sync`] scope; `false` if there is none (the caller waits).
pub(super) fn defer_written(sync: &Arc<GroupSync>, ticket: u64) -> bool {
    DEFERRED.with(|deferred| match deferred.borrow_mut().as_mut() {
        Some((Deferred::Sync, list)) => {
            let batch = Arc::new(Batch::default());
            batch.resolve(Ok(ticket));
            add(list, sync, batch);
            true
        }
        _ => false,
    })
}

/// Runs `f` (on this thread) with its durable audit appends deferred: they
/// are queued, not written, and the returned [`Durability`] must be
/// awaited (which writes and syncs them) before anything `f` computed is
/// handed to anyone ("no audit, no answer").
pub fn defer_durability<R>(f: impl FnOnce() -> R) -> (R, Durability) {
    scoped(Deferred::Write, f)
}

/// Runs `f` (on this thread) with its durable audit appends written at
/// once but their sync deferred: for work whose results reach the disk
/// before they are handed out (a tree decryption stages plaintext in
/// temporary files), so that even a `kill -9` leaves each record in the
/// trail beside what it produced. The returned [`Durability`] must be
/// awaited before the results are handed out.
pub fn defer_sync<R>(f: impl FnOnce() -> R) -> (R, Durability) {
    scoped(Deferred::Sync, f)
}

fn scoped<R>(kind: Deferred, f: impl FnOnce() -> R) -> (R, Durability) {
    struct Restore(Option<Scope>);
    impl Drop for Restore {
        // Restores the enclosing scope, also when `f` panics.
        fn drop(&mut self) {
            let outer = self.0.take();
            DEFERRED.with(|deferred| *deferred.borrow_mut() = outer);
        }
    }
    let outer = DEFERRED.with(|deferred| deferred.borrow_mut().replace((kind, Vec::new())));
    let restore = Restore(outer);
    let result = f();
    let pending = DEFERRED
        .with(|deferred| deferred.borrow_mut().take())
        .map(|(_, pending)| pending)
        .unwrap_or_default();
    drop(restore);
    (result, Durability { pending })
}

/// Audit records appended but not yet known to be on stable storage (see
/// [`defer_durability`]). Dropped without a wait, it still asks for its
/// records to be written (a refusal's record, say).
#[must_use = "a result may be handed out only once its audit records are durable"]
#[derive(Default)]
pub struct Durability {
    pending: Pending,
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durability")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Durability {
    /// Adds the records of `other`: waiting for the result waits for both.
    pub fn absorb(&mut self, mut other: Durability) {
        for (sync, batches) in std::mem::take(&mut other.pending) {
            match self.pending.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &sync)) {
                Some((_, mine)) => mine.extend(batches),
                None => self.pending.push((sync, batches)),
            }
        }
    }

    /// Whether there is nothing to wait for.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Writes the records still queued, on this thread, without waiting
    /// for their sync: for an answer that must not go out before its record
    /// is in the trail but need not wait for stable storage (a refused
    /// request's).
    pub fn write_now(&self) {
        for (sync, batches) in &self.pending {
            if written(sync, batches).is_none() {
                sync.write_queue();
            }
        }
    }

    /// Waits, without blocking the thread, until the records are written
    /// and on stable storage; an error if their write or a sync failed (the
    /// records may be lost).
    pub async fn wait(mut self) -> Result<(), AuditError> {
        for (sync, batches) in std::mem::take(&mut self.pending) {
            let woken = sync.register(batches)?;
            match woken.await {
                Ok(outcome) => outcome?,
                // Cannot happen: the syncer settles every waiter before it
                // ends, and the handle (which ends it) outlives this wait.
                Err(_) => return Err(sync.failed("the group commit ended")),
            }
        }
        Ok(())
    }

    /// Waits, blocking the thread, until the records are written (by this
    /// thread if they are still queued) and on stable storage.
    pub fn wait_blocking(mut self) -> Result<(), AuditError> {
        for (sync, batches) in std::mem::take(&mut self.pending) {
            if written(&sync, &batches).is_none() {
                sync.write_queue();
            }
            match written(&sync, &batches) {
                Some(Ok(ticket)) => sync.wait(ticket)?,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(sync.failed("the audit log was closed before its queue was written"))
                }
            }
        }
        Ok(())
    }
}

impl Drop for Durability {
    fn drop(&mut self) {
        // Not waited for (an error path, or a panic): the records are still
        // written and synced, only nobody waits for it.
        for (sync, _) in &self.pending {
            let _ = sync.request();
        }
    }
}

/// The highest ticket of `batches` once all are written; the first write
/// error; `None` while one is still queued.
fn written(sync: &GroupSync, batches: &[Arc<Batch>]) -> Option<Result<u64, AuditError>> {
    let mut ticket = 0;
    for batch in batches {
        match batch.outcome()? {
            Ok(t) => ticket = ticket.max(*t),
            Err(why) => {
                return Some(Err(AuditError::Io {
                    path: sync.path.clone(),
                    source: match why.os_error {
                        Some(code) => std::io::Error::from_raw_os_error(code),
                        None => std::io::Error::other(why.message.clone()),
                    },
                }))
            }
        }
    }
    Some(Ok(ticket))
}
