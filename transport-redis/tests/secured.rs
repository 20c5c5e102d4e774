//! The secured suite (signing, sealing, limits) against a real redis-server.

use busbar_redis as _;
use busbar_test_support::RedisServer;

busbar_conformance::secured_suite!(|| async {
    busbar_core::Bus::connect(&RedisServer::shared().url())
        .await
        .expect("connect to the test redis-server")
});
