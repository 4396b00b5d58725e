//! Former home of the re-wrap worker, now [`crate::worker`]. Kept for the
//! one path `cli/kms.rs` still names; remove once it names the worker.

#[doc(hidden)]
pub use crate::worker::known_envelopes_for_key;
