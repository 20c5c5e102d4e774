//! A process-wide bus for scripts, in the style of PyMQ: `init`, `publish`, `shutdown`.
//!
//! Libraries should take a [`Bus`] instead; this is for small programs.

use crate::bus::Bus;
use crate::error::{Error, Result};
use crate::event::Event;
use std::sync::RwLock;

static GLOBAL: RwLock<Option<Bus>> = RwLock::new(None);

/// Connects the global bus to `url` and starts every handler registered with
/// `#[subscriber]` and `#[remote]` on it (as [`Bus::start_registered`] does); they
/// run until [`shutdown`]. Replaces, without shutting down, any earlier global bus.
pub async fn init(url: &str) -> Result<Bus> {
    let bus = Bus::connect(url).await?;
    bus.start_registered().await?.detach();
    *GLOBAL.write().unwrap_or_else(|p| p.into_inner()) = Some(bus.clone());
    Ok(bus)
}

/// The global bus; [`Error::Closed`] before [`init`] or after [`shutdown`].
pub fn bus() -> Result<Bus> {
    GLOBAL
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or(Error::Closed)
}

/// Publishes `event` on the global bus.
pub async fn publish<E: Event>(event: &E) -> Result<()> {
    bus()?.publish(event).await
}

/// Shuts the global bus down and forgets it.
pub async fn shutdown() -> Result<()> {
    let bus = GLOBAL.write().unwrap_or_else(|p| p.into_inner()).take();
    match bus {
        Some(bus) => bus.shutdown().await,
        None => Ok(()),
    }
}
