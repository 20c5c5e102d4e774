//! Typed work queues.

use crate::bus::Bus;
use crate::codec::{self, ContentType};
use crate::envelope::{Envelope, Kind};
use crate::error::{Error, Result};
use crate::event::FromEnvelope;
use crate::name::Name;
use crate::stats::Stats;
use crate::transport::RawDelivery;
use serde::Serialize;
use std::marker::PhantomData;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Default time an acknowledged delivery may stay unacknowledged before it is
/// delivered again.
pub const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);

/// A named work queue of `T`. Each item goes to exactly one consumer.
///
/// Items that do not decode as `T` are not lost, and do not stop a consumer:
/// [`get`](Queue::get) and [`receive`](Queue::receive) move each one to the
/// dead-letter queue `_dead.<name>` (with the decode error in a `busbar-error`
/// header), count it in [`Stats::dead_lettered`], log it at `warn`, and go on
/// waiting for the next item within the same timeout.
pub struct Queue<T> {
    bus: Bus,
    name: Name,
    visibility: Duration,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            bus: self.bus.clone(),
            name: self.name.clone(),
            visibility: self.visibility,
            _type: PhantomData,
        }
    }
}

impl<T> Queue<T> {
    pub(crate) fn new(bus: Bus, name: Name) -> Self {
        Queue {
            bus,
            name,
            visibility: DEFAULT_VISIBILITY,
            _type: PhantomData,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Sets how long a [`receive`](Queue::receive)d item may stay unacknowledged
    /// before it is delivered again.
    pub fn visibility_timeout(mut self, visibility: Duration) -> Self {
        self.visibility = visibility;
        self
    }

    /// Items waiting (not in flight).
    pub async fn len(&self) -> Result<usize> {
        self.bus.transport_checked()?.queue_len(&self.name).await
    }

    /// True when no item waits.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }
}

impl<T: Serialize> Queue<T> {
    /// Appends an item; it waits there until a consumer takes it.
    pub async fn put(&self, item: &T) -> Result<()> {
        let transport = self.bus.transport_checked()?;
        let payload = codec::encode(item)?;
        self.bus.check_size(payload.len())?;
        let envelope = Envelope::new(
            Kind::QueueItem,
            self.name.clone(),
            ContentType::JSON,
            payload,
        );
        let span = tracing::debug_span!("busbar.queue.put", queue = %self.name, id = %envelope.id);
        transport.queue_put(envelope).instrument(span).await?;
        Stats::incr(&transport.stats().enqueued);
        Ok(())
    }
}

/// Taking items needs only decoding, so a `Queue<Message>` reads items raw.
impl<T: FromEnvelope> Queue<T> {
    /// Takes the next item, waiting up to `timeout`; `Ok(None)` if none came.
    ///
    /// An item that does not decode as `T` is moved to `_dead.<name>` and
    /// skipped (see [`Queue`]); the wait goes on for the time left.
    pub async fn get(&self, timeout: Duration) -> Result<Option<T>> {
        let transport = self.bus.transport_checked()?;
        let deadline = Deadline::after(timeout);
        loop {
            let span = tracing::debug_span!("busbar.queue.get", queue = %self.name);
            let left = deadline.left();
            let Some(envelope) = transport
                .queue_get(&self.name, left)
                .instrument(span)
                .await?
            else {
                return Ok(None);
            };
            Stats::incr(&transport.stats().dequeued);
            match T::from_envelope(envelope.clone()) {
                Ok(value) => return Ok(Some(value)),
                // A plain get already took the item: if it cannot be dead-lettered
                // the caller must hear of it, so that error is returned.
                Err(err) => self.dead_letter(envelope, &err).await?,
            }
        }
    }

    /// Takes the next item for acknowledged processing, waiting up to `timeout`.
    ///
    /// The item comes back to the queue if the [`Delivery`] is nacked, dropped
    /// unacknowledged, or not acknowledged within the visibility timeout. An
    /// item that does not decode as `T` is moved to `_dead.<name>`, acknowledged
    /// and skipped (see [`Queue`]); the wait goes on for the time left.
    pub async fn receive(&self, timeout: Duration) -> Result<Option<Delivery<T>>> {
        let transport = self.bus.transport_checked()?;
        let deadline = Deadline::after(timeout);
        loop {
            let span = tracing::debug_span!("busbar.queue.receive", queue = %self.name);
            let left = deadline.left();
            let Some(raw) = transport
                .queue_receive(&self.name, left, self.visibility)
                .instrument(span)
                .await?
            else {
                return Ok(None);
            };
            Stats::incr(&transport.stats().dequeued);
            if raw.attempt() > 1 {
                Stats::incr(&transport.stats().redelivered);
            }
            match T::from_envelope(raw.envelope().clone()) {
                Ok(value) => return Ok(Some(Delivery { value, raw })),
                Err(err) => {
                    // Acked only once the dead letter is stored: if storing it
                    // fails, the item comes back after its visibility timeout.
                    self.dead_letter(raw.envelope().clone(), &err).await?;
                    raw.ack().await?;
                }
            }
        }
    }

    async fn dead_letter(&self, envelope: Envelope, err: &Error) -> Result<()> {
        let transport = self.bus.transport_checked()?;
        Stats::incr(&transport.stats().decode_errors);
        let envelope = crate::dead_letter::undecodable(envelope, &self.name, &err.to_string())?;
        let dead = envelope.subject.clone();
        transport.queue_put(envelope).await?;
        Stats::incr(&transport.stats().dead_lettered);
        tracing::warn!(queue = %self.name, %dead, %err, "undecodable queue item moved to the dead-letter queue");
        Ok(())
    }
}

/// The end of a wait that may span several takes (items skipped as dead letters).
struct Deadline {
    /// `None` when `timeout` reaches past what `Instant` can hold: wait without end.
    at: Option<Instant>,
    timeout: Duration,
}

impl Deadline {
    fn after(timeout: Duration) -> Deadline {
        Deadline {
            at: Instant::now().checked_add(timeout),
            timeout,
        }
    }

    fn left(&self) -> Duration {
        self.at.map_or(self.timeout, |at| {
            at.saturating_duration_since(Instant::now())
        })
    }
}

/// An item taken with [`Queue::receive`]: [`ack`](Delivery::ack) it when done.
///
/// Dropping it unacknowledged puts the item back for another consumer.
#[derive(Debug)]
pub struct Delivery<T> {
    value: T,
    raw: RawDelivery,
}

impl<T> Delivery<T> {
    /// The item.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// How many times the item has been handed out, this one included (1 = first).
    pub fn attempt(&self) -> u32 {
        self.raw.attempt()
    }

    /// True when the item was handed out before (nacked, dropped or timed out).
    pub fn is_redelivery(&self) -> bool {
        self.attempt() > 1
    }

    /// Marks the item done; it is removed for good.
    pub async fn ack(self) -> Result<()> {
        self.raw.ack().await
    }

    /// Gives the item back for another consumer.
    pub async fn nack(self) -> Result<()> {
        self.raw.nack().await
    }
}

impl<T> std::ops::Deref for Delivery<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}
