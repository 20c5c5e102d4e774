//! The whole conformance suite on a real redis-server behind the security
//! layer: every envelope signed, then every envelope sealed and signed.

use busbar_conformance::secured::{behind, sealing_layer, signing_layer};
use busbar_redis as _;
use busbar_test_support::RedisServer;

async fn connect() -> busbar_core::Bus {
    busbar_core::Bus::connect(&RedisServer::shared().url())
        .await
        .expect("connect to the test redis-server")
}

mod signed {
    use super::*;
    busbar_conformance::suite!(behind(connect, signing_layer()));
}

mod sealed {
    use super::*;
    busbar_conformance::suite!(behind(connect, sealing_layer()));
}
