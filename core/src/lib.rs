//! The transport-agnostic core of busbar.
//!
//! - [`Bus`]: the typed handle users hold (events, queues, RPC);
//! - [`EventBus`]: the small object-safe SPI each transport implements;
//! - [`Envelope`] and [`wire`]: what travels, and its binary form;
//! - [`Name`] and [`Pattern`]: validated topics and `*`/`>` patterns;
//! - [`Error`]: the one error type.
//!
//! Most users depend on the `busbar` facade crate, which re-exports this one and
//! selects transports by cargo feature.
#![deny(missing_docs)]

mod autoreg;
mod bus;
pub mod codec;
pub mod connect;
pub mod dead_letter;
mod envelope;
mod error;
mod event;
pub mod fallback;
pub mod global;
pub mod inflight;
mod kind_probe;
pub mod liveness;
pub mod mailbox;
mod name;
pub mod pending;
mod queue;
mod registry;
pub mod reply;
mod rpc;
pub mod security;
mod stats;
mod subscription;
pub mod transport;
pub mod wire;

pub use autoreg::{Endpoint, EndpointKind, Registered, Service};
pub use bus::{Bus, DEFAULT_MAX_PAYLOAD};
pub use codec::ContentType;
pub use envelope::{ceil_millis, now_millis, Envelope, Kind, MessageId};
pub use error::{BoxError, Error, Fault, Result};
pub use event::{Event, FromEnvelope, Message};
pub use global::{init, publish, shutdown};
pub use name::{Name, Pattern, MAX_NAME_LEN};
pub use queue::{Delivery, Queue, DEFAULT_VISIBILITY};
pub use registry::redact_url;
pub use rpc::{Provider, Stub, DEFAULT_TIMEOUT};
pub use stats::{Latencies, LatencyHistogram, Stats, StatsSnapshot, LATENCY_BUCKETS};
pub use subscription::{Listener, Outcome, Subscription};
pub use transport::{Capabilities, EventBus, SubscribeOptions};

#[doc(hidden)]
pub mod __private {
    pub use crate::autoreg::macro_support::*;
    pub use crate::registry::Registration;
    pub use inventory;
}
