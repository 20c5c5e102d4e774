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
use std::time::Duration;
use tracing::Instrument;

/// Default time an acknowledged delivery may stay unacknowledged before it is
/// delivered again.
pub const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);

/// A named work queue of `T`. Each item goes to exactly one consumer.
///
/// Items that do not decode as `T` are not lost: they move to the dead-letter
/// queue `_dead.<name>` and the call returns [`Error::Codec`].
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
    pub async fn get(&self, timeout: Duration) -> Result<Option<T>> {
        let transport = self.bus.transport_checked()?;
        let span = tracing::debug_span!("busbar.queue.get", queue = %self.name);
        match transport
            .queue_get(&self.name, timeout)
            .instrument(span)
            .await?
        {
            None => Ok(None),
            Some(envelope) => {
                Stats::incr(&transport.stats().dequeued);
                self.decode_or_dead_letter(envelope).await.map(Some)
            }
        }
    }

    /// Takes the next item for acknowledged processing, waiting up to `timeout`.
    ///
    /// The item comes back to the queue if the [`Delivery`] is nacked, dropped
    /// unacknowledged, or not acknowledged within the visibility timeout.
    pub async fn receive(&self, timeout: Duration) -> Result<Option<Delivery<T>>> {
        let transport = self.bus.transport_checked()?;
        let span = tracing::debug_span!("busbar.queue.receive", queue = %self.name);
        let Some(raw) = transport
            .queue_receive(&self.name, timeout, self.visibility)
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
            Ok(value) => Ok(Some(Delivery { value, raw })),
            Err(err) => {
                let envelope = raw.envelope().clone();
                self.dead_letter(envelope, &err).await?;
                raw.ack().await?;
                Err(err)
            }
        }
    }

    async fn decode_or_dead_letter(&self, envelope: Envelope) -> Result<T> {
        match T::from_envelope(envelope.clone()) {
            Ok(value) => Ok(value),
            Err(err) => {
                self.dead_letter(envelope, &err).await?;
                Err(err)
            }
        }
    }

    async fn dead_letter(&self, envelope: Envelope, err: &Error) -> Result<()> {
        let transport = self.bus.transport_checked()?;
        Stats::incr(&transport.stats().decode_errors);
        let envelope = crate::dead_letter::undecodable(envelope, &self.name, &err.to_string())?;
        tracing::warn!(queue = %self.name, dead = %envelope.subject, %err, "undecodable queue item moved to the dead-letter queue");
        transport.queue_put(envelope).await
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
