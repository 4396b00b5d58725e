//! The group commit of durable appends: one `fdatasync` at a time, and
//! each covers every write made before it started.
//!
//! An append takes a ticket (the count of writes so far) under the chain's
//! lock, right after its write, and its caller is answered only once a sync
//! that started after that write has finished. Two kinds of waiter share
//! the syncs:
//!
//! - a blocking waiter ([`GroupSync::wait`], the CLI and the server's
//!   blocking pool) runs the sync itself if none is running (it becomes the
//!   leader), or waits for the running one and then for the next;
//! - an async waiter ([`Durability::wait`], the server's connection tasks)
//!   never blocks its thread: it asks this log's syncer thread for a sync
//!   and awaits the result, so a connection task runs the operation, writes
//!   its record and goes on serving other requests while the sync runs.
//!
//! Records appended while a sync runs are covered by the next one, so N
//! concurrent requests cost about two syncs, not N. A failed sync fails
//! every waiter and every later append of the handle (the kernel may have
//! dropped the dirty pages, so a later sync could succeed without them).

use super::{io_error, AuditError};
use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use tokio::sync::watch;

pub(super) struct GroupSync {
    /// The audit file, duplicated, so a sync runs without the chain's lock.
    file: File,
    path: PathBuf,
    state: Mutex<SyncState>,
    /// Signalled after every sync, and when an async waiter wants one.
    done: Condvar,
    /// What is durable, for async waiters.
    progress: watch::Sender<Progress>,
}

#[derive(Default)]
struct SyncState {
    /// Writes made (tickets handed out).
    written: u64,
    /// Writes known to be on stable storage.
    durable: u64,
    /// The highest ticket an async waiter waits for.
    wanted: u64,
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

#[derive(Debug, Clone, Default)]
struct Progress {
    durable: u64,
    failed: Option<String>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GroupSync {
    pub(super) fn new(file: File, path: &Path) -> Arc<GroupSync> {
        Arc::new(GroupSync {
            file,
            path: path.to_path_buf(),
            state: Mutex::new(SyncState::default()),
            done: Condvar::new(),
            progress: watch::Sender::new(Progress::default()),
        })
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
        drop(state);
        let result = self.file.sync_data();
        let mut state = lock(&self.state);
        state.syncing = false;
        state.syncs += 1;
        match &result {
            Ok(()) => state.durable = state.durable.max(upto),
            Err(e) => state.failed = Some(e.to_string()),
        }
        self.progress.send_replace(Progress {
            durable: state.durable,
            failed: state.failed.clone(),
        });
        self.done.notify_all();
        (state, result)
    }

    /// Asks the syncer thread for a sync covering `ticket` (starting the
    /// thread on first use).
    fn request(self: &Arc<Self>, ticket: u64) -> Result<(), AuditError> {
        let mut state = lock(&self.state);
        state.wanted = state.wanted.max(ticket);
        if !state.syncer {
            let sync = Arc::clone(self);
            std::thread::Builder::new()
                .name("rewrap-audit-sync".into())
                .spawn(move || sync.syncer())
                .map_err(io_error(&self.path))?;
            state.syncer = true;
        }
        self.done.notify_all();
        Ok(())
    }

    /// The syncer thread: syncs whenever an async waiter wants a write that
    /// is not durable yet and no sync is running.
    fn syncer(&self) {
        let mut state = lock(&self.state);
        loop {
            if state.failed.is_some() {
                break;
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

/// Writes awaiting a sync: the log's group commit and the highest ticket.
type Pending = Vec<(Arc<GroupSync>, u64)>;

thread_local! {
    /// The writes of the current [`defer_durability`] scope, if any.
    static DEFERRED: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Hands the wait for `ticket` to the current thread's
/// [`defer_durability`] scope; `false` if there is none (the caller waits).
pub(super) fn defer(sync: &Arc<GroupSync>, ticket: u64) -> bool {
    DEFERRED.with(|deferred| match deferred.borrow_mut().as_mut() {
        Some(list) => {
            match list.iter_mut().find(|(s, _)| Arc::ptr_eq(s, sync)) {
                Some((_, t)) => *t = (*t).max(ticket),
                None => list.push((Arc::clone(sync), ticket)),
            }
            true
        }
        None => false,
    })
}

/// Runs `f` (on this thread) with the durability of its durable audit
/// appends deferred: they are written when `f` returns, and the returned
/// [`Durability`] must be awaited before anything `f` computed is handed
/// to anyone ("no audit, no answer").
pub fn defer_durability<R>(f: impl FnOnce() -> R) -> (R, Durability) {
    struct Scope(Option<Pending>);
    impl Drop for Scope {
        // Restores the enclosing scope, also when `f` panics.
        fn drop(&mut self) {
            let outer = self.0.take();
            DEFERRED.with(|deferred| *deferred.borrow_mut() = outer);
        }
    }
    let outer = DEFERRED.with(|deferred| deferred.borrow_mut().replace(Vec::new()));
    let scope = Scope(outer);
    let result = f();
    let pending = DEFERRED
        .with(|deferred| deferred.borrow_mut().take())
        .unwrap_or_default();
    drop(scope);
    (result, Durability { pending })
}

/// Audit records written but not yet known to be on stable storage (see
/// [`defer_durability`]).
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
    pub fn absorb(&mut self, other: Durability) {
        for (sync, ticket) in other.pending {
            match self.pending.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &sync)) {
                Some((_, t)) => *t = (*t).max(ticket),
                None => self.pending.push((sync, ticket)),
            }
        }
    }

    /// Whether there is nothing to wait for.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Waits, without blocking the thread, until the records are on stable
    /// storage; an error if a sync failed (the records may be lost).
    pub async fn wait(self) -> Result<(), AuditError> {
        for (sync, ticket) in self.pending {
            let mut progress = sync.progress.subscribe();
            sync.request(ticket)?;
            let reached = progress
                .wait_for(|p| p.failed.is_some() || p.durable >= ticket)
                .await
                .map(|p| p.clone());
            match reached {
                Ok(Progress {
                    failed: Some(why), ..
                }) => return Err(sync.failed(&why)),
                Ok(_) => {}
                // Cannot happen: the sender lives in `sync`, held here.
                Err(_) => return Err(sync.failed("the group commit ended")),
            }
        }
        Ok(())
    }

    /// Waits, blocking the thread, until the records are on stable storage.
    pub fn wait_blocking(self) -> Result<(), AuditError> {
        for (sync, ticket) in self.pending {
            sync.wait(ticket)?;
        }
        Ok(())
    }
}
