//! Which connections the server keeps: a limit per source address, a global
//! limit, and, at the global limit, shedding the connection that has waited
//! longest without an authenticated request in progress.
//!
//! A slow-body or slow-header flood holds connections that never send a
//! request whose signature verifies. The per-address limit caps what one
//! address can hold; the global limit caps the total, and when it is
//! reached a new connection is admitted by closing the oldest *waiting*
//! connection (one that is reading headers or a body, or idle between
//! requests) rather than queueing the newcomer behind the flood. A
//! well-behaved client finishes its headers and body in milliseconds, so it
//! is never the oldest waiting connection for long; a connection that is
//! running a verified request is never shed.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its source address already holds the most connections allowed.
    PerAddress,
    /// The global limit is reached and every connection is busy.
    Global,
}

/// The connection limits and the live connections.
#[derive(Debug)]
pub(crate) struct Admission {
    per_address: usize,
    global: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    by_address: HashMap<IpAddr, usize>,
    total: usize,
    next_seq: u64,
    /// Connections without a verified request in progress, by the time they
    /// started waiting (oldest first): the ones that may be shed.
    waiting: BTreeMap<u64, Arc<Shed>>,
}

/// One connection's place in the books.
#[derive(Debug)]
struct Shed {
    address: IpAddr,
    /// Set when the connection was shed: it no longer counts.
    released: std::sync::atomic::AtomicBool,
    notify: Notify,
}

/// A connection admitted: counts against the limits until dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    shed: Arc<Shed>,
    /// Its key in `waiting` while it waits.
    seq: Mutex<Option<u64>>,
}

impl Admission {
    /// Limits: `per_address` connections per source address, `global` in all
    /// (both at least 1).
    pub(crate) fn new(per_address: usize, global: usize) -> Arc<Admission> {
        Arc::new(Admission {
            per_address: per_address.max(1),
            global: global.max(1),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only counters behind: go on.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a connection from `address`, shedding the oldest waiting
    /// connection if the global limit is reached.
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Arc<Ticket>, Refusal> {
        let mut state = self.lock();
        if state.by_address.get(&address).copied().unwrap_or(0) >= self.per_address {
            return Err(Refusal::PerAddress);
        }
        if state.total >= self.global {
            let Some((_, oldest)) = state.waiting.pop_first() else {
                return Err(Refusal::Global);
            };
            release(&mut state, &oldest);
            oldest.notify.notify_one();
        }
        state.total += 1;
        *state.by_address.entry(address).or_insert(0) += 1;
        let shed = Arc::new(Shed {
            address,
            released: std::sync::atomic::AtomicBool::new(false),
            notify: Notify::new(),
        });
        let seq = state.next_seq;
        state.next_seq += 1;
        state.waiting.insert(seq, shed.clone());
        Ok(Arc::new(Ticket {
            admission: self.clone(),
            shed,
            seq: Mutex::new(Some(seq)),
        }))
    }
}

/// Takes a connection out of the counts (once).
fn release(state: &mut State, shed: &Shed) {
    if shed
        .released
        .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        return;
    }
    state.total -= 1;
    if let Some(n) = state.by_address.get_mut(&shed.address) {
        *n -= 1;
        if *n == 0 {
            state.by_address.remove(&shed.address);
        }
    }
}

impl Ticket {
    /// Resolves when the connection was shed to admit another.
    pub(crate) async fn shed(&self) {
        self.shed.notify.notified().await;
    }

    /// Marks the connection as running a verified request (it cannot be
    /// shed) until the guard is dropped, when it is waiting again (and the
    /// newest waiting connection).
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        let mut state = self.admission.lock();
        if let Some(seq) = self.seq_lock().take() {
            state.waiting.remove(&seq);
        }
        Busy(self.clone())
    }

    fn seq_lock(&self) -> MutexGuard<'_, Option<u64>> {
        self.seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A verified request in progress on a connection; see [`Ticket::busy`].
pub(crate) struct Busy(Arc<Ticket>);

impl Drop for Busy {
    fn drop(&mut self) {
        let ticket = &self.0;
        let mut state = ticket.admission.lock();
        if ticket
            .shed
            .released
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        state.waiting.insert(seq, ticket.shed.clone());
        *ticket.seq_lock() = Some(seq);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        if let Some(seq) = self.seq_lock().take() {
            state.waiting.remove(&seq);
        }
        release(&mut state, &self.shed);
    }
}
