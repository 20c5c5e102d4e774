//! The conformance suite against a real redis-server on a free loopback port.

use busbar_redis as _;
use busbar_test_support::RedisServer;

fn url() -> String {
    RedisServer::shared().url()
}

busbar_conformance::suite!(|| async {
    busbar_core::Bus::connect(&url())
        .await
        .expect("connect to the test redis-server")
});
