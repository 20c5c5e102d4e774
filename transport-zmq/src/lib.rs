//! The ZeroMQ transport for busbar (`zmq://host:port`) and its broker.
//!
//! - [`Broker`]: a broker to run in a process (`Broker::bind("tcp://127.0.0.1:0")`)
//!   or as the `busbar-zmq-broker` binary. One ROUTER socket routes events to
//!   matching subscriptions, holds named queues with acknowledged delivery, and
//!   load-balances RPC calls among providers.
//! - [`ZmqBus`]: the client transport behind `Bus::connect("zmq://host:port")`,
//!   one DEALER socket per bus, reconnecting by itself.
//!
//! The protocol (frames, commands, heartbeats, flow control) is written down in
//! `docs/zmq-protocol.md` so clients in other languages can speak it; envelopes
//! use busbar's wire format (`busbar_core::wire`).
//!
//! Built on the pure-Rust `zeromq` crate: no libzmq, no PUB/SUB (its PUB drops
//! silently when full). Flow control is ours: publish batches are acknowledged
//! by the broker, which holds the acknowledgement back while a subscriber is
//! slow, so nothing is dropped between processes; a subscriber that falls behind
//! its own buffer is told how many events it missed.
//!
//! ```no_run
//! # async fn demo() -> busbar_core::Result<()> {
//! use busbar_zmq as _; // links the `zmq://` connector
//! let broker = busbar_zmq::Broker::bind("tcp://127.0.0.1:0").await?;
//! let bus = busbar_core::Bus::connect(&broker.url()).await?;
//! bus.publish_to("orders.created", &42).await?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees and limits
//! - Events: at most once, in order per publisher; a subscription is live when
//!   `subscribe` returns. Events a broker received and lost when it died are gone.
//! - Queues live in the broker's memory: they outlive clients, not the broker.
//!   `receive` is at least once (nack, visibility timeout, lost consumer);
//!   `get` hands the item over as it leaves the broker.
//! - RPC: a call held by a provider that dies fails at once with
//!   `Error::Transport`; one whose provider left gracefully moves to another.
//! - Connecting: a broker that is not up yet is tried again with jittered
//!   backoff until [`ZmqConfig::connect_timeout`] (URL `connect_timeout=<ms>`,
//!   default 5000; `0`: once), the policy of `busbar_core::connect`.
//! - Losing the broker: the bus reconnects with backoff (50 ms to 2 s), restores
//!   subscriptions, providers and waiting consumers, and buffers publishes up to
//!   [`ZmqConfig::publish_buffer`]. A queue `put` waits for the broker (sent
//!   again if its connection went before the answer: at least once) up to
//!   [`ZmqConfig::outage_wait`], a new `get`/`receive` within its timeout;
//!   other requests in flight fail with `Error::Transport`, acks included
//!   (the broker that lost the connection, or stopped, took the item back).
//! - No authentication or encryption at the ZeroMQ level (NULL mechanism): sign
//!   or seal envelopes for that.
#![deny(missing_docs)]

mod acker;
mod broker;
mod calls;
mod client;
mod config;
mod connection;
mod inbound;
mod protocol;

pub use broker::{Broker, BrokerConfig, BrokerStats};
pub use client::ZmqBus;
pub use config::ZmqConfig;

use async_trait::async_trait;
use busbar_core::transport::Connector;
use busbar_core::{EventBus, Result};
use std::sync::Arc;

struct ZmqConnector;

#[async_trait]
impl Connector for ZmqConnector {
    fn schemes(&self) -> &'static [&'static str] {
        &["zmq"]
    }

    async fn connect(&self, url: &str) -> Result<Arc<dyn EventBus>> {
        Ok(Arc::new(ZmqBus::connect(url).await?))
    }
}

busbar_core::register_connector!(ZmqConnector);
