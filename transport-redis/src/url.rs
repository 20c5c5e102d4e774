//! Reading `redis://` URLs: cluster seed nodes, the client's connection
//! settings, and paths given as query parameters.

use busbar_core::{redact_url, Error, Result};

/// The node URLs of `[user:password@]host:port,host:port[/db]`: each seed
/// node gets the credentials (a cluster has one user table per node, kept alike).
pub(crate) fn cluster_nodes(scheme: &str, base: &str) -> std::result::Result<Vec<String>, String> {
    let (authority, path) = match base.split_once('/') {
        Some((authority, path)) => (authority, path),
        None => (base, ""),
    };
    if !matches!(path, "" | "0") {
        return Err("Redis Cluster has only database 0".into());
    }
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|host| !host.is_empty())
        .map(|host| format!("{scheme}://{userinfo}{host}"))
        .collect();
    if nodes.is_empty() {
        return Err("expected redis+cluster://host:port[,host:port...]".into());
    }
    Ok(nodes)
}

/// The client's view of one server URL: RESP3 and `TCP_NODELAY`, always.
pub(crate) fn connection_info(url: &str) -> Result<redis::ConnectionInfo> {
    use redis::IntoConnectionInfo;
    let info = url
        .into_connection_info()
        .map_err(|err| Error::InvalidUrl {
            url: redact_url(url),
            reason: err.to_string(),
        })?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    Ok(info
        .set_redis_settings(settings)
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true)))
}

/// A path from a URL parameter (`%2F` and friends decoded).
pub(crate) fn decode_path(value: &str) -> std::path::PathBuf {
    let mut out = Vec::with_capacity(value.len());
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::path::PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use busbar_core::Error;
    use std::time::Duration;

    #[test]
    fn reads_busbar_parameters_and_passes_the_rest() {
        let config =
            Config::from_url("redis://u:p@h:1/2?namespace=app&publish_buffer=5&foo=bar").unwrap();
        assert_eq!(config.namespace, "app");
        assert_eq!(config.publish_buffer, 5);
        assert_eq!(config.redis_url(), "redis://u:p@h:1/2?foo=bar");
    }

    #[test]
    fn reads_cluster_seed_nodes_with_their_credentials() {
        let config =
            Config::from_url("redis+cluster://u:p@h1:1,h2:2?namespace=app&foo=bar").unwrap();
        assert!(config.is_cluster() && !config.is_tls());
        assert_eq!(config.namespace, "app");
        assert_eq!(
            config.cluster_nodes.as_deref().unwrap(),
            ["redis://u:p@h1:1?foo=bar", "redis://u:p@h2:2?foo=bar"]
        );
        let tls = Config::from_url("rediss+cluster://h1:1/0").unwrap();
        assert!(tls.is_cluster() && tls.is_tls());
        let err = Config::from_url("redis+cluster://h1:1/3").unwrap_err();
        assert!(err.to_string().contains("database 0"), "{err}");
        assert!(Config::from_url("redis+cluster://").is_err());
        assert!(!Config::from_url("redis://h:1").unwrap().is_cluster());
    }

    #[test]
    fn reads_the_connect_policy() {
        let config = Config::from_url("redis://h:1?connect_timeout=250&foo=bar").unwrap();
        assert_eq!(config.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.redis_url(), "redis://h:1?foo=bar");
        let default = Config::from_url("redis://h:1").unwrap();
        assert_eq!(
            default.connect_timeout,
            busbar_core::connect::DEFAULT_TIMEOUT
        );
        let err = Config::from_url("redis://h:1?connect_timeout=soon").unwrap_err();
        assert!(err.to_string().contains("connect_timeout"), "{err}");
    }

    #[test]
    fn refuses_other_schemes_and_bad_numbers() {
        assert!(matches!(
            Config::from_url("zmq://h:1"),
            Err(Error::InvalidUrl { .. })
        ));
        let err = Config::from_url("redis://h:1?publish_buffer=x").unwrap_err();
        assert!(err.to_string().contains("publish_buffer"), "{err}");
        let err = Config::from_url("redis://:secret@h:1?namespace=").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
