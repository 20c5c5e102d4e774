//! busbar: one API for pub/sub events, work queues and RPC.
#![deny(missing_docs)]
pub use busbar_core::*;
