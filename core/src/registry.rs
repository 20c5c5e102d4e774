//! Finds the transport for a URL scheme among the compiled-in transports.

use crate::error::{Error, Result};
use crate::transport::{Connector, EventBus};
use std::sync::Arc;

/// A connector submitted by a transport crate. Use [`register_connector!`](crate::register_connector).
#[doc(hidden)]
pub struct Registration(pub &'static dyn Connector);

inventory::collect!(Registration);

/// Registers a transport's [`Connector`] so `Bus::connect` finds its schemes.
///
/// ```ignore
/// busbar_core::register_connector!(MemoryConnector);
/// ```
#[macro_export]
macro_rules! register_connector {
    ($connector:expr) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Registration(&$connector)
        }
    };
}

/// Schemes busbar knows, with the cargo feature of the `busbar` crate that provides each.
const KNOWN_SCHEMES: &[(&str, &str)] = &[
    ("memory", "memory"),
    ("redis", "redis"),
    ("rediss", "redis"),
    ("redis+cluster", "redis"),
    ("zmq", "zmq"),
];

/// The scheme of `url`: the text before `://`.
pub(crate) fn scheme_of(url: &str) -> Option<&str> {
    url.split_once("://")
        .map(|(scheme, _)| scheme)
        .filter(|s| !s.is_empty())
}

/// `url` with any password replaced, fit for errors and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// Opens the transport registered for `url`'s scheme.
pub(crate) async fn connect(url: &str) -> Result<Arc<dyn EventBus>> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: redact_url(url),
        reason,
    };
    let scheme = scheme_of(url).ok_or_else(|| invalid("expected scheme://...".into()))?;
    for Registration(connector) in inventory::iter::<Registration> {
        if connector.schemes().contains(&scheme) {
            let (url, security) = crate::security::SecureLayer::from_url(url)?;
            let transport = connector.connect(&url).await?;
            return Ok(match security {
                Some(layer) => layer.layer(transport),
                None => transport,
            });
        }
    }
    Err(invalid(
        match KNOWN_SCHEMES.iter().find(|(s, _)| *s == scheme) {
            Some((_, feature)) => format!(
            "the {scheme}:// transport is not compiled in; enable the `{feature}` feature of busbar"
        ),
            None => format!("unknown scheme {scheme:?}"),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact_url("memory://"), "memory://");
    }

    #[tokio::test]
    async fn unknown_and_missing_schemes_are_named() {
        let err = connect("zmq://127.0.0.1:1").await.err().unwrap();
        assert!(err.to_string().contains("`zmq` feature"), "{err}");
        let err = connect("carrier-pigeon://x").await.err().unwrap();
        assert!(err.to_string().contains("unknown scheme"), "{err}");
        let err = connect("no-scheme").await.err().unwrap();
        assert!(matches!(err, Error::InvalidUrl { .. }));
    }
}
