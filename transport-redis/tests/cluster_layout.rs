//! Where a bus's event subscriptions live on a Redis Cluster: all on one node.
//!
//! Plain pub/sub is forwarded between nodes asynchronously. Were a bus's
//! subscriptions spread over nodes, an event could reach one subscription from
//! a node that forwarded it late, after a newer subscription was made there
//! (seen as a flake of `unusual_valid_names_are_taken_literally` under load).

use busbar_core::Bus;
use busbar_redis as _;
use busbar_test_support::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_subscribes_to_all_its_events_on_one_node() {
    let cluster = RedisCluster::start();
    let bus = Bus::connect(&format!("{}?namespace=layout", cluster.url()))
        .await
        .unwrap();
    let mut subscriptions = Vec::new();
    for topic in ["orders.created", "sensors.t1", "a.b", "zeta"] {
        subscriptions.push(bus.subscribe_to::<u32>(topic).await.unwrap());
    }
    for pattern in ["orders.*", "sensors.>"] {
        subscriptions.push(bus.subscribe_to::<u32>(pattern).await.unwrap());
    }
    // `subscribe` returns once the node confirmed, so the counts are settled.
    let per_node: Vec<(String, String)> = (0..cluster.ports().len())
        .map(|node| {
            let channels = cluster
                .node_command(node, &["PUBSUB", "CHANNELS", "*"])
                .unwrap();
            let patterns = cluster.node_command(node, &["PUBSUB", "NUMPAT"]).unwrap();
            (channels.trim().to_owned(), patterns.trim().to_owned())
        })
        .collect();
    let holding: Vec<_> = per_node
        .iter()
        .filter(|(channels, patterns)| channels != "*0" || patterns != ":0")
        .collect();
    assert_eq!(
        holding,
        [&("*4".to_owned(), ":2".to_owned())],
        "all subscriptions on one node; per node (channels, patterns): {per_node:?}"
    );
    drop(subscriptions);
}
