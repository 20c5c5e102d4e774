//! Handlers in a crate of their own, for busbar-macros' registration tests.
//!
//! A test binary that does not name this crate does not link it, and then
//! `Bus::start_registered` finds none of these: the tests add
//! `use busbar_macros_testhelper as _;`.

use serde::{Deserialize, Serialize};

/// Asks [`on_ping()`] for a [`Pong`].
#[derive(Debug, Serialize, Deserialize, busbar::Event)]
#[event(topic = "helper.ping")]
pub struct Ping {
    /// Echoed back.
    pub n: u32,
}

/// The answer to a [`Ping`].
#[derive(Debug, PartialEq, Serialize, Deserialize, busbar::Event)]
#[event(topic = "helper.pong")]
pub struct Pong {
    /// The ping's number.
    pub n: u32,
}

/// Text functions, served as `text.<function>`.
pub mod text {
    /// Upper-cases `text`; served as `text.shout`.
    #[busbar::remote]
    pub fn shout(text: String) -> String {
        text.to_uppercase()
    }
}

/// Answers each ping with a pong.
#[busbar::subscriber]
pub async fn on_ping(ping: Ping, bus: &busbar::Bus) -> busbar::Result<()> {
    bus.publish(&Pong { n: ping.n }).await
}
