//! Faults on a Redis Cluster: every node kills every client connection
//! (`CLIENT KILL`) in the middle of the traffic, abandoned takes, and the whole
//! cluster crashes and comes back. The same scenarios as `faults.rs` runs on one server; each
//! test runs its own cluster.

mod support;

use busbar_test_support::RedisCluster;
use support::scenarios;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_on_every_node_restores_subscriptions_and_providers() {
    scenarios::client_kill_restores_subscriptions_and_providers(&RedisCluster::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_on_every_node_loses_no_queue_item() {
    scenarios::client_kill_loses_no_queue_item(&RedisCluster::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_blocking_get_does_not_eat_the_next_item() {
    scenarios::cancelled_blocking_get_does_not_eat_the_next_item(&RedisCluster::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn got_items_never_come_back() {
    scenarios::got_items_never_come_back(&RedisCluster::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_gets_put_items_back_at_once() {
    scenarios::abandoned_gets_put_items_back_at_once(&RedisCluster::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_mid_stream() {
    scenarios::restart_mid_stream(&mut RedisCluster::start_persistent()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_lanes_come_back() {
    scenarios::lapsed_lanes_come_back(&RedisCluster::start()).await;
}
