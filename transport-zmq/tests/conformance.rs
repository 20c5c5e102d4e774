//! The whole conformance suite against `zmq://`, every bus a client of one
//! in-process broker on a free loopback port.

mod common;

// Links the crate so its `zmq` connector is registered.
use busbar_zmq as _;

busbar_conformance::suite!(|| async {
    busbar_core::Bus::connect(common::broker_url())
        .await
        .expect("connect to the test broker")
});
