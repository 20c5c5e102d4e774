//! The one error type every busbar operation returns.

use std::fmt;

/// A boxed error from a transport or a codec, kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong on a bus.
///
/// No transport-specific type appears here: a Redis or ZeroMQ failure is carried
/// as the [`source`](std::error::Error::source) of [`Error::Transport`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topic, pattern, queue or method name broke the naming rules.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// The URL could not be used to connect (bad syntax, unknown scheme, missing feature).
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given, with any password removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No provider serves the method that was called.
    #[error("no responders for {method:?}")]
    NoResponders {
        /// The method called.
        method: String,
    },
    /// The operation did not complete before its deadline.
    #[error("the operation timed out")]
    Timeout,
    /// The provider that took the call was lost (its process or connection
    /// died) before answering. The call may have been partly handled, so it is
    /// not safe to blindly retry a call that is not idempotent.
    #[error("the provider of {method:?} was lost before answering")]
    ProviderLost {
        /// The method called.
        method: String,
    },
    /// The remote handler failed; `kind` names the failure, `message` describes it.
    #[error("remote error {kind}: {message}")]
    Remote {
        /// A stable, machine-readable name for the failure (an enum variant name, `panic`, ...).
        kind: String,
        /// The human-readable description.
        message: String,
    },
    /// A payload could not be encoded, or did not decode as the expected type.
    #[error("codec error: {0}")]
    Codec(#[source] BoxError),
    /// A frame or envelope from the wire was malformed, truncated or oversized.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message was larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the rejected message in bytes.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A slow subscriber missed this many events because its buffer was full.
    #[error("the subscriber fell behind and missed {missed} events")]
    Lagged {
        /// Events missed.
        missed: u64,
    },
    /// The transport lost its connection to the broker: events published
    /// until it is restored are missed, how many is not known. The
    /// subscription keeps running and resumes by itself.
    #[error(
        "the connection to the broker was lost: events published until it is restored are missed"
    )]
    Interrupted,
    /// The transport failed (connection lost, broker error, ...).
    #[error("transport error: {0}")]
    Transport(#[source] BoxError),
    /// The bus, subscription or provider has been shut down.
    #[error("the bus is closed")]
    Closed,
    /// The transport does not implement this operation.
    #[error("unsupported by the {transport} transport: {operation}")]
    Unsupported {
        /// The transport's name.
        transport: &'static str,
        /// The operation that was attempted.
        operation: &'static str,
    },
}

impl Error {
    /// Wraps any error as a transport failure.
    pub fn transport(err: impl Into<BoxError>) -> Self {
        Error::Transport(err.into())
    }

    /// Wraps any error as a codec failure.
    pub fn codec(err: impl Into<BoxError>) -> Self {
        Error::Codec(err.into())
    }

    /// A short, stable name for the variant: `timeout`, `no_responders`, `remote`, ...
    ///
    /// Useful for metrics labels and command-line exit codes.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidName { .. } => "invalid_name",
            Error::InvalidUrl { .. } => "invalid_url",
            Error::NoResponders { .. } => "no_responders",
            Error::Timeout => "timeout",
            Error::ProviderLost { .. } => "provider_lost",
            Error::Remote { .. } => "remote",
            Error::Codec(_) => "codec",
            Error::Malformed(_) => "malformed",
            Error::TooLarge { .. } => "too_large",
            Error::Lagged { .. } => "lagged",
            Error::Interrupted => "interrupted",
            Error::Transport(_) => "transport",
            Error::Closed => "closed",
            Error::Unsupported { .. } => "unsupported",
        }
    }
}

/// The result type of every busbar operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure raised by an RPC handler, as it travels back to the caller.
///
/// Handlers return `Result<T, E>` where `E: Into<Fault>`. Every error type that is
/// `Display + Serialize` converts: its kind is the serde name of the enum variant
/// (or of the struct) and its message is its `Display` text, so
/// `enum InventoryError { OutOfStock { sku: String } }` arrives as
/// `Error::Remote { kind: "OutOfStock", .. }`. Other errors convert with
/// [`Fault::new`] or [`Fault::from_display`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// A stable, machine-readable name for the failure.
    pub kind: String,
    /// The human-readable description.
    pub message: String,
}

impl Fault {
    /// A fault with an explicit kind and message.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Fault {
            kind: kind.into(),
            message: message.into(),
        }
    }

    /// A fault of kind `error` carrying any displayable error's text.
    pub fn from_display(err: impl fmt::Display) -> Self {
        Fault::new("error", err.to_string())
    }
}

impl<E: fmt::Display + serde::Serialize> From<E> for Fault {
    fn from(err: E) -> Self {
        let kind = crate::kind_probe::serde_name(&err).unwrap_or("error");
        Fault::new(kind, err.to_string())
    }
}

impl From<Error> for Fault {
    fn from(err: Error) -> Self {
        match err {
            Error::Remote { kind, message } => Fault { kind, message },
            other => Fault::new(other.kind(), other.to_string()),
        }
    }
}

impl From<Fault> for Error {
    fn from(fault: Fault) -> Self {
        Error::Remote {
            kind: fault.kind,
            message: fault.message,
        }
    }
}
