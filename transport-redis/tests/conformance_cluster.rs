//! The conformance suite against a real local Redis Cluster: three masters on
//! free loopback ports, joined with `redis-cli --cluster create`; plain, and
//! behind the security layer with every envelope sealed and signed.

use busbar_conformance::secured::{behind, sealing_layer};
use busbar_redis as _;
use busbar_test_support::RedisCluster;

async fn connect() -> busbar_core::Bus {
    busbar_core::Bus::connect(&RedisCluster::shared().url())
        .await
        .expect("connect to the test redis cluster")
}

busbar_conformance::suite!(connect);

mod sealed {
    use super::*;
    busbar_conformance::suite!(behind(connect, sealing_layer()));
}
