//! A local three-master Redis Cluster for tests.
//!
//! [`RedisCluster::start`] runs three cluster-enabled `redis-server`s (each a
//! [`RedisServer`] with its own port, cluster bus port and private directory),
//! joins them with `redis-cli --cluster create`, and waits until every node
//! agrees on the whole slot map, so `MOVED` redirections and cluster-wide pub/sub
//! work as soon as it returns.

use crate::{free_port, fresh_dir, make_certificates, Certificates, RedisServer, Tls};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the nodes of a starting cluster may take to agree on the slot map,
/// once `redis-cli --cluster create` has run (and how long that may run).
/// A master waits about 2 s after its start before it reports `cluster_state:ok`.
pub const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);

/// How many masters a [`RedisCluster`] has.
pub const NODES: usize = 3;

const CLI_INSTALL_HINT: &str = "redis-cli was not found on PATH: install it \
    (Debian/Ubuntu: `apt-get install redis-tools`, macOS: `brew install redis`) \
    or set BUSBAR_REDIS_CLI to its path";

/// Three cluster-enabled `redis-server` masters on free loopback ports, owning
/// all 16384 slots between them, with no replicas and no persistence. All nodes
/// are killed, and their directories removed, when it is dropped.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// Dropped after the nodes: the CA and certificate they all serve TLS with.
    certificates: Option<SharedCertificates>,
}

/// A test CA and a certificate for 127.0.0.1 in a directory of their own,
/// removed on drop.
struct SharedCertificates {
    dir: PathBuf,
    tls: Tls,
}

impl Drop for SharedCertificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisCluster {
    /// Starts three masters, joins them into one cluster and waits until every
    /// node reports `cluster_state:ok`, sees all 16384 slots assigned and knows
    /// all three masters at their `127.0.0.1` addresses.
    ///
    /// # Panics
    /// When `redis-server` or `redis-cli` is missing (with an install hint), or
    /// the cluster does not come up within [`CLUSTER_DEADLINE`].
    pub fn start() -> RedisCluster {
        Self::start_with(false, false)
    }

    /// Like [`start`](Self::start), every node also serving TLS on a port of its
    /// own with one test CA (made with the `openssl` command), and talking TLS
    /// on the cluster bus (`tls-cluster yes`). Connect with
    /// [`tls_url`](Self::tls_url): nodes give TLS clients their TLS ports.
    pub fn start_tls() -> RedisCluster {
        Self::start_with(false, true)
    }

    /// `rediss+cluster://127.0.0.1:<TLS port 1>,...?tls_ca=<the test CA>` for a
    /// cluster from [`start_tls`](Self::start_tls).
    ///
    /// # Panics
    /// When the cluster does not serve TLS.
    pub fn tls_url(&self) -> String {
        let certificates = self
            .certificates
            .as_ref()
            .expect("start the cluster with start_tls()");
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|node| {
                let tls = node.tls.as_ref().expect("every node serves TLS");
                format!("127.0.0.1:{}", tls.port)
            })
            .collect();
        format!(
            "rediss+cluster://{}?tls_ca={}",
            nodes.join(","),
            certificates.tls.ca.display()
        )
    }

    /// Like [`start`](Self::start) but every node runs with `--appendonly yes`
    /// (fsync always), so data survives [`stop`](Self::stop) and
    /// [`resume`](Self::resume).
    pub fn start_persistent() -> RedisCluster {
        Self::start_with(true, false)
    }

    /// Kills every node (`kill -9`, like a crash of the whole cluster).
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
    }

    /// Starts every [`stop`](Self::stop)ped node again on its ports and data
    /// directory, and waits until the cluster reports `cluster_state:ok` again.
    ///
    /// # Panics
    /// When it does not within [`CLUSTER_DEADLINE`].
    pub fn resume(&mut self) {
        for node in &mut self.nodes {
            node.resume();
        }
        if let Err(err) = self.wait_ok() {
            panic!("the Redis Cluster did not come back: {err}");
        }
    }

    fn start_with(persistent: bool, tls: bool) -> RedisCluster {
        let mut last_error = String::new();
        // The node starts already retry on a taken port; a whole-cluster retry
        // covers what is left, e.g. a node dying of a bus port taken meanwhile.
        for _attempt in 0..3 {
            let certificates = tls.then(|| {
                let dir = fresh_dir();
                let tls = make_certificates(&dir, 0);
                SharedCertificates { dir, tls }
            });
            let cluster = RedisCluster {
                nodes: (0..NODES)
                    .map(|_| start_node(persistent, certificates.as_ref().map(|c| &c.tls)))
                    .collect(),
                certificates,
            };
            match cluster.create().and_then(|()| cluster.wait_ok()) {
                Ok(()) => return cluster,
                Err(err) => last_error = err,
            }
        }
        panic!("the Redis Cluster did not start: {last_error}");
    }

    /// One cluster shared by every test of this test binary (started on first
    /// use). Tests sharing it must use unique key and channel names.
    pub fn shared() -> &'static RedisCluster {
        static SHARED: OnceLock<RedisCluster> = OnceLock::new();
        SHARED.get_or_init(RedisCluster::start)
    }

    /// `redis+cluster://127.0.0.1:<port 1>,127.0.0.1:<port 2>,127.0.0.1:<port 3>`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports()
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The nodes' client ports, in the order of [`url`](Self::url).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Sends one command to node `node` (an index into [`ports`](Self::ports))
    /// and returns the raw reply, like [`RedisServer::command`]. The node answers
    /// itself: a key it does not own gets `-MOVED <slot> <host>:<port>`.
    ///
    /// # Panics
    /// When `node` is not below [`NODES`].
    pub fn node_command(&self, node: usize, args: &[&str]) -> std::io::Result<String> {
        self.nodes[node].command(args)
    }

    fn create(&self) -> Result<(), String> {
        let log_path = self.nodes[0].dir.join("cluster-create.log");
        let log = File::create(&log_path).map_err(|err| err.to_string())?;
        let log_err = log.try_clone().map_err(|err| err.to_string())?;
        let mut cli = Command::new(cli_binary());
        cli.arg("--cluster").arg("create");
        for port in self.ports() {
            cli.arg(format!("127.0.0.1:{port}"));
        }
        let mut child = cli
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|err| match err.kind() {
                std::io::ErrorKind::NotFound => panic!("{CLI_INSTALL_HINT}"),
                _ => panic!("cannot run redis-cli: {err}"),
            });
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        // redis-cli waits for the join without a limit of its own.
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        let mut backoff = Duration::from_millis(5);
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!("redis-cli --cluster create: {status}: {}", log()))
                }
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "redis-cli --cluster create still running after {CLUSTER_DEADLINE:?}: {}",
                        log()
                    ));
                }
                Ok(None) => {}
                Err(err) => return Err(err.to_string()),
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// Polls, with a growing interval, until every node agrees on a healthy
    /// cluster, so no test sees `CLUSTERDOWN` or a redirection to a node that
    /// does not know yet it owns the slot.
    fn wait_ok(&self) -> Result<(), String> {
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        let mut backoff = Duration::from_millis(10);
        loop {
            let not_ready = (0..NODES).find_map(|node| self.check_node(node).err());
            let Some(reason) = not_ready else {
                return Ok(());
            };
            if Instant::now() > deadline {
                return Err(format!("not ready within {CLUSTER_DEADLINE:?}: {reason}"));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    fn check_node(&self, node: usize) -> Result<(), String> {
        let port = self.nodes[node].port();
        let info = self
            .node_command(node, &["CLUSTER", "INFO"])
            .map_err(|err| format!("node {port}: {err}"))?;
        let want = [
            "cluster_state:ok".to_owned(),
            "cluster_slots_assigned:16384".to_owned(),
            format!("cluster_known_nodes:{NODES}"),
            format!("cluster_size:{NODES}"),
        ];
        if let Some(missing) = want
            .iter()
            .find(|want| !info.lines().any(|line| line.trim() == want.as_str()))
        {
            return Err(format!(
                "node {port}: no {missing} in CLUSTER INFO:\n{info}"
            ));
        }
        let nodes = self
            .node_command(node, &["CLUSTER", "NODES"])
            .map_err(|err| format!("node {port}: {err}"))?;
        // A node learns its own address only from its peers; until then it would
        // redirect clients to ":port".
        let healthy = nodes.lines().filter(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            fields.len() >= 9
                && self
                    .ports()
                    .iter()
                    .any(|port| fields[1].starts_with(&format!("127.0.0.1:{port}@")))
                && fields[2].split(',').any(|flag| flag == "master")
                && !fields[2]
                    .split(',')
                    .any(|flag| matches!(flag, "fail" | "fail?" | "handshake" | "noaddr"))
                && fields[7] == "connected"
        });
        if healthy.count() != NODES {
            return Err(format!(
                "node {port}: not all masters healthy in CLUSTER NODES:\n{nodes}"
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("ports", &self.ports())
            .finish()
    }
}

/// A cluster-enabled server whose bus port is picked explicitly: the default,
/// port + 10000, may be taken or beyond 65535. With `tls`, it serves TLS with
/// those files and speaks TLS to the other nodes.
fn start_node(persistent: bool, tls: Option<&Tls>) -> RedisServer {
    let certificates = tls.map_or(Certificates::None, Certificates::Shared);
    RedisServer::start_custom(persistent, certificates, |dir: &Path| {
        // An attempt that died on a taken port may have written nodes.conf with
        // that port: each attempt starts as a new node rather than relying on
        // redis to correct it.
        let _ = std::fs::remove_file(dir.join("nodes.conf"));
        let tls_cluster: &[&str] = match tls {
            Some(_) => &["--tls-cluster", "yes", "--tls-replication", "yes"],
            None => &[],
        };
        [
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &free_port().to_string(),
            "--cluster-node-timeout",
            "2000",
        ]
        .iter()
        .chain(tls_cluster)
        .map(OsString::from)
        .chain([
            OsString::from("--cluster-config-file"),
            dir.join("nodes.conf").into_os_string(),
        ])
        .collect()
    })
}

fn cli_binary() -> String {
    std::env::var("BUSBAR_REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;

    #[test]
    fn every_node_reports_ok() {
        let cluster = RedisCluster::shared();
        let ports = cluster.ports();
        assert_eq!(ports.len(), NODES);
        let expected: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        assert_eq!(
            cluster.url(),
            format!("redis+cluster://{}", expected.join(","))
        );
        for node in 0..NODES {
            let info = cluster.node_command(node, &["CLUSTER", "INFO"]).unwrap();
            assert!(info.contains("cluster_state:ok"), "{info}");
            assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
        }
    }

    #[test]
    fn keys_in_different_slots_land_on_different_nodes() {
        let cluster = RedisCluster::shared();
        let ports = cluster.ports();
        let mut owners = std::collections::BTreeSet::new();
        for i in 0..30 {
            let key = format!("slots-test-{i}");
            let slot = cluster
                .node_command(0, &["CLUSTER", "KEYSLOT", &key])
                .unwrap();
            let slot = slot.trim().trim_start_matches(':').to_owned();
            let reply = cluster.node_command(0, &["SET", &key, "v"]).unwrap();
            let owner = if reply.starts_with("+OK") {
                ports[0]
            } else {
                // -MOVED <slot> 127.0.0.1:<port>
                let fields: Vec<&str> = reply.split_whitespace().collect();
                assert_eq!(fields[..2], ["-MOVED", slot.as_str()], "{reply}");
                let (host, port) = fields[2].rsplit_once(':').unwrap();
                assert_eq!(host, "127.0.0.1", "{reply}");
                let port: u16 = port.parse().unwrap();
                let owner = ports.iter().position(|p| *p == port).expect("a known node");
                assert!(owner != 0, "{reply}");
                let reply = cluster.node_command(owner, &["SET", &key, "v"]).unwrap();
                assert!(reply.starts_with("+OK"), "{reply}");
                port
            };
            owners.insert(owner);
        }
        assert_eq!(owners.len(), NODES, "30 keys all on {owners:?}");
    }

    #[test]
    fn publish_on_one_node_reaches_a_subscriber_on_another() {
        let cluster = RedisCluster::shared();
        let stream = TcpStream::connect(("127.0.0.1", cluster.ports()[2])).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        writer
            .write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$15\r\ncluster-pubsub1\r\n")
            .unwrap();
        let mut reader = BufReader::new(stream);
        // The confirmation, an array of three, ends with the subscription count.
        let mut line = String::new();
        while line != ":1\r\n" {
            line.clear();
            assert!(reader.read_line(&mut line).unwrap() > 0);
        }
        let reply = cluster
            .node_command(0, &["PUBLISH", "cluster-pubsub1", "hello-cluster"])
            .unwrap();
        assert!(reply.starts_with(':'), "{reply}");
        loop {
            line.clear();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "connection closed"
            );
            if line == "hello-cluster\r\n" {
                break;
            }
        }
    }

    #[test]
    fn dropping_frees_the_ports() {
        let cluster = RedisCluster::start();
        let ports = cluster.ports();
        let dirs: Vec<_> = cluster.nodes.iter().map(|n| n.dir.clone()).collect();
        for node in 0..NODES {
            assert!(cluster
                .node_command(node, &["PING"])
                .unwrap()
                .starts_with("+PONG"));
        }
        drop(cluster);
        for port in ports {
            assert!(
                command(port, &["PING"]).is_err(),
                "port {port} still answers"
            );
        }
        for dir in dirs {
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
    }
}
