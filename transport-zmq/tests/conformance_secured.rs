//! The whole conformance suite on `zmq://` behind the security layer: every
//! envelope signed, then every envelope sealed and signed.

mod common;

use busbar_conformance::secured::{behind, sealing_layer, signing_layer};
// Links the crate so its `zmq` connector is registered.
use busbar_zmq as _;

async fn connect() -> busbar_core::Bus {
    busbar_core::Bus::connect(common::broker_url())
        .await
        .expect("connect to the test broker")
}

mod signed {
    use super::*;
    busbar_conformance::suite!(behind(connect, signing_layer()));
}

mod sealed {
    use super::*;
    busbar_conformance::suite!(behind(connect, sealing_layer()));
}
