//! The secured suite (signing, sealing, limits) against `zmq://`, every bus a
//! client of one in-process broker on a free loopback port.

mod common;

use busbar_zmq as _;

busbar_conformance::secured_suite!(|| async {
    busbar_core::Bus::connect(common::broker_url())
        .await
        .expect("connect to the test broker")
});
