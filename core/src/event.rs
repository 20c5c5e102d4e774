//! Typed events and raw messages.

use crate::codec;
use crate::envelope::{Envelope, MessageId};
use crate::error::{Error, Result};
use crate::name::Name;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A type published as an event, with its stable topic.
///
/// The topic is declared, never derived from `std::any::type_name`, so it is the
/// same on every compiler and in every language:
///
/// ```
/// # use serde::{Serialize, Deserialize};
/// #[derive(Serialize, Deserialize)]
/// struct OrderCreated { id: u64 }
///
/// impl busbar_core::Event for OrderCreated {
///     const TOPIC: &'static str = "orders.created";
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a busbar event",
    note = "implement `busbar::Event` for `{Self}` with `const TOPIC: &'static str = \"...\";`"
)]
pub trait Event: Serialize + DeserializeOwned + Send + 'static {
    /// The topic this type is published on, e.g. `orders.created`.
    const TOPIC: &'static str;
}

/// A value a subscription or queue yields, built from a received envelope.
///
/// Implemented for every deserializable type (the payload is decoded) and for
/// [`Message`] (the envelope is kept as it came).
pub trait FromEnvelope: Sized + Send + 'static {
    /// Builds the value, or explains why the envelope does not fit.
    fn from_envelope(envelope: Envelope) -> Result<Self>;
}

impl<T: DeserializeOwned + Send + 'static> FromEnvelope for T {
    fn from_envelope(envelope: Envelope) -> Result<Self> {
        codec::decode(&envelope.content_type, &envelope.payload)
    }
}

/// A received message with its metadata, undecoded.
#[derive(Debug, Clone)]
pub struct Message {
    envelope: Envelope,
}

impl Message {
    /// The topic (or queue) it was sent to.
    pub fn topic(&self) -> &Name {
        &self.envelope.subject
    }

    /// Its unique id.
    pub fn id(&self) -> MessageId {
        self.envelope.id
    }

    /// When it was sent, in milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.envelope.timestamp_ms
    }

    /// Its headers, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.envelope.headers
    }

    /// The value of the first header named `key`.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.envelope.header(key)
    }

    /// The encoded payload.
    pub fn payload(&self) -> &[u8] {
        &self.envelope.payload
    }

    /// Decodes the payload as `T`, with [`Error::Codec`] when it does not fit.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        codec::decode(&self.envelope.content_type, &self.envelope.payload)
    }

    /// The whole envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Takes the envelope out.
    pub fn into_envelope(self) -> Envelope {
        self.envelope
    }
}

impl FromEnvelope for Message {
    fn from_envelope(envelope: Envelope) -> Result<Self> {
        Ok(Message { envelope })
    }
}

/// Validates an event type's declared topic.
pub(crate) fn topic_of<E: Event>() -> Result<Name> {
    Name::from_static(E::TOPIC).map_err(|err| match err {
        Error::InvalidName { name, reason } => Error::InvalidName {
            name: format!("{name} (the TOPIC of {})", std::any::type_name::<E>()),
            reason,
        },
        other => other,
    })
}
