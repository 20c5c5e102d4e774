//! Client settings, read from a `zmq://host:port?key=value` URL.

use busbar_core::connect::{ConnectPolicy, TIMEOUT_PARAM};
use busbar_core::{redact_url, Error, Result};
use std::time::Duration;

/// How a [`ZmqBus`](crate::ZmqBus) connects and buffers.
///
/// From a URL: `zmq://127.0.0.1:5555?connect_timeout=5000&op_timeout_ms=5000&publish_buffer=65536`.
#[derive(Debug, Clone)]
pub struct ZmqConfig {
    /// The broker's ZeroMQ endpoint, `tcp://host:port`.
    pub endpoint: String,
    /// How long `connect` keeps trying a broker it cannot reach, with jittered
    /// backoff between attempts (URL parameter `connect_timeout`, in ms, or its
    /// older spelling `connect_timeout_ms`; `0`: one attempt). See
    /// `busbar_core::connect`. Reconnects after a loss go on until the bus closes.
    pub connect_timeout: Duration,
    /// How long to wait for the broker to answer a command, beyond the
    /// command's own waiting time (a `get` timeout, an RPC deadline).
    pub op_timeout: Duration,
    /// Publishes buffered on the client: in flight to the socket, or held while
    /// the broker is unreachable. Past it, `publish` waits while connected and
    /// fails while disconnected.
    pub publish_buffer: usize,
    /// How long a queue `put` waits for a lost broker to come back before it
    /// fails (URL parameter `outage_wait_ms`; default 10000); a put whose
    /// connection was lost is sent again on the next one meanwhile.
    pub outage_wait: Duration,
    /// Publish batches sent and not yet acknowledged by the broker.
    pub publish_window: usize,
    /// Largest envelope accepted from the broker, in bytes.
    pub max_envelope: usize,
}

impl ZmqConfig {
    /// Settings for the broker at `endpoint` (`tcp://host:port`), all else default.
    pub fn new(endpoint: impl Into<String>) -> ZmqConfig {
        ZmqConfig {
            endpoint: endpoint.into(),
            connect_timeout: busbar_core::connect::DEFAULT_TIMEOUT,
            op_timeout: Duration::from_secs(5),
            outage_wait: Duration::from_secs(10),
            publish_buffer: 65_536,
            publish_window: 16,
            max_envelope: busbar_core::wire::DEFAULT_MAX_ENVELOPE,
        }
    }

    /// Reads `zmq://host:port[?key=value&...]`.
    pub fn from_url(url: &str) -> Result<ZmqConfig> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        let rest = url
            .strip_prefix("zmq://")
            .ok_or_else(|| invalid("expected zmq://host:port".into()))?;
        let (authority, query) = match rest.split_once('?') {
            Some((authority, query)) => (authority, Some(query)),
            None => (rest, None),
        };
        let authority = authority.trim_end_matches('/');
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(invalid("expected zmq://host:port".into()));
        }
        let mut config = ZmqConfig::new(format!("tcp://{authority}"));
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(format!("bad query parameter {pair:?}")))?;
            let number: u64 = value
                .parse()
                .map_err(|_| invalid(format!("{key} must be a number")))?;
            match key {
                "connect_timeout" | "connect_timeout_ms" => {
                    let mut policy = ConnectPolicy::with_timeout(config.connect_timeout);
                    policy.read_param(TIMEOUT_PARAM, value).map_err(invalid)?;
                    config.connect_timeout = policy.timeout;
                }
                "op_timeout_ms" => config.op_timeout = Duration::from_millis(number),
                "outage_wait_ms" => config.outage_wait = Duration::from_millis(number),
                "publish_buffer" => config.publish_buffer = number.max(1) as usize,
                "publish_window" => config.publish_window = number.max(1) as usize,
                "max_envelope" => config.max_envelope = number as usize,
                other => return Err(invalid(format!("unknown parameter {other:?}"))),
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_urls() {
        let c = ZmqConfig::from_url("zmq://127.0.0.1:5555?op_timeout_ms=250").unwrap();
        assert_eq!(c.endpoint, "tcp://127.0.0.1:5555");
        assert_eq!(c.op_timeout, Duration::from_millis(250));
        assert!(ZmqConfig::from_url("zmq://127.0.0.1").is_err());
        assert!(ZmqConfig::from_url("redis://x:1").is_err());
        assert!(ZmqConfig::from_url("zmq://h:1?nope=1").is_err());
        let c = ZmqConfig::from_url("zmq://h:1?connect_timeout=0").unwrap();
        assert_eq!(c.connect_timeout, Duration::ZERO);
        let c = ZmqConfig::from_url("zmq://h:1?connect_timeout_ms=250").unwrap();
        assert_eq!(c.connect_timeout, Duration::from_millis(250));
        assert_eq!(
            ZmqConfig::from_url("zmq://h:1").unwrap().connect_timeout,
            busbar_core::connect::DEFAULT_TIMEOUT
        );
    }
}
