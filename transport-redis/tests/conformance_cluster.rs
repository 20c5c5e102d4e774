//! The conformance suite against a real local Redis Cluster: three masters on
//! free loopback ports, joined with `redis-cli --cluster create`.

use busbar_redis as _;
use busbar_test_support::RedisCluster;

fn url() -> String {
    RedisCluster::shared().url()
}

busbar_conformance::suite!(|| async {
    busbar_core::Bus::connect(&url())
        .await
        .expect("connect to the test redis cluster")
});
