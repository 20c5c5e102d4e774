//! The conformance suite against a local Redis Cluster over TLS
//! (`rediss+cluster://`): three masters sharing one test CA, talking TLS to
//! clients and to each other.

use busbar_redis as _;
use busbar_test_support::RedisCluster;
use std::sync::OnceLock;

fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(RedisCluster::start_tls)
}

async fn connect() -> busbar_core::Bus {
    busbar_core::Bus::connect(&cluster().tls_url())
        .await
        .expect("connect to the test redis cluster over TLS")
}

busbar_conformance::suite!(connect);
