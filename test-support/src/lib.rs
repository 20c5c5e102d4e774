//! Real brokers for busbar's tests.
//!
//! [`RedisServer::start`] runs `redis-server` on a free `127.0.0.1` port with no
//! persistence and a private data directory, waits until it answers `PING`, and
//! kills it when dropped. [`RedisServer::shared`] gives one server per test binary.
//! A missing binary is a panic with an install hint: tests never skip silently.
//!
//! [`RedisCluster::start`] runs a three-master Redis Cluster the same way.
//!
//! Never touches a Redis already running on the default port: every server gets
//! its own free port.
#![deny(missing_docs)]

pub mod bench;
pub mod cluster;

pub use cluster::RedisCluster;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a starting server may take to answer `PING`.
pub const START_DEADLINE: Duration = Duration::from_secs(10);

const INSTALL_HINT: &str = "redis-server was not found on PATH: install it \
    (Debian/Ubuntu: `apt-get install redis-server`, macOS: `brew install redis`) \
    or set BUSBAR_REDIS_SERVER to its path";

/// A `redis-server` process owned by a test; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    persistent: bool,
    tls: Option<Tls>,
    /// More `redis-server` options, kept so [`resume`](Self::resume) starts the
    /// same server (a cluster node keeps its cluster port and node id).
    extra: Vec<OsString>,
}

/// The TLS side of a server started with [`RedisServer::start_tls`].
#[derive(Debug, Clone)]
pub(crate) struct Tls {
    port: u16,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl RedisServer {
    /// Starts a server on a free loopback port without persistence
    /// (`--save '' --appendonly no`) and waits until it answers `PING`.
    ///
    /// # Panics
    /// When `redis-server` is missing (with an install hint) or does not come up.
    pub fn start() -> RedisServer {
        Self::start_with(false)
    }

    /// Like [`start`](Self::start) but with `--appendonly yes`, so data survives a
    /// [`restart`](Self::restart).
    pub fn start_persistent() -> RedisServer {
        Self::start_with(true)
    }

    /// One server shared by every test of this test binary (started on first use).
    /// Tests sharing it must use unique names.
    pub fn shared() -> &'static RedisServer {
        static SHARED: OnceLock<RedisServer> = OnceLock::new();
        SHARED.get_or_init(RedisServer::start)
    }

    /// Like [`start`](Self::start), also serving TLS on a second port with a
    /// certificate for `127.0.0.1` signed by a fresh test CA (made with the
    /// `openssl` command). Connect with [`tls_url`](Self::tls_url).
    pub fn start_tls() -> RedisServer {
        Self::start_with_tls(false, true)
    }

    /// `rediss://127.0.0.1:<tls port>?tls_ca=<the test CA>` for a server from
    /// [`start_tls`](Self::start_tls).
    ///
    /// # Panics
    /// When the server does not serve TLS.
    pub fn tls_url(&self) -> String {
        let tls = self
            .tls
            .as_ref()
            .expect("start the server with start_tls()");
        format!(
            "rediss://127.0.0.1:{}?tls_ca={}",
            tls.port,
            tls.ca.display()
        )
    }

    fn start_with(persistent: bool) -> RedisServer {
        Self::start_with_tls(persistent, false)
    }

    fn start_with_tls(persistent: bool, with_tls: bool) -> RedisServer {
        let certificates = if with_tls {
            Certificates::Fresh
        } else {
            Certificates::None
        };
        Self::start_custom(persistent, certificates, |_| Vec::new())
    }

    /// Starts a server with more options, `extra(dir)` giving them afresh on every
    /// attempt, so options naming ports (`--cluster-port`) get ports free at that
    /// moment.
    pub(crate) fn start_custom(
        persistent: bool,
        certificates: Certificates<'_>,
        extra: impl Fn(&Path) -> Vec<OsString>,
    ) -> RedisServer {
        let dir = fresh_dir();
        let mut last_error = String::new();
        for _attempt in 0..20 {
            let port = free_port();
            let tls = match certificates {
                Certificates::None => None,
                Certificates::Fresh => Some(make_certificates(&dir, free_port())),
                Certificates::Shared(tls) => Some(Tls {
                    port: free_port(),
                    ..tls.clone()
                }),
            };
            let extra = extra(&dir);
            match spawn(port, &dir, persistent, tls.as_ref(), &extra) {
                Ok(child) => {
                    let mut server = RedisServer {
                        child: Some(child),
                        port,
                        dir: dir.clone(),
                        persistent,
                        tls,
                        extra,
                    };
                    match server.wait_ready(Ready::Pong) {
                        Ok(()) => return server,
                        Err(err) => {
                            last_error = err;
                            server.kill();
                        }
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
                Err(err) => last_error = err.to_string(),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("redis-server did not start: {last_error}");
    }

    /// The server's URL, `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends one command (inline form) and returns the raw reply line(s), e.g.
    /// `command(&["CLIENT", "KILL", "TYPE", "normal"])`. For fault injection.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        command(self.port, args)
    }

    /// Kills the server and starts it again on the same port with the same data
    /// directory. With [`start_persistent`](Self::start_persistent), data written
    /// before the restart is there after it. `while_down` runs while the server is
    /// stopped. Waits until the new server answers `PING`.
    pub fn restart(&mut self, while_down: impl FnOnce()) {
        self.stop();
        while_down();
        self.resume();
    }

    /// Kills the server (`kill -9`, like a crash); [`resume`](Self::resume) starts it again.
    /// A persistent server's append-only file is fsynced on every write, so
    /// everything it acknowledged survives.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Like [`start_persistent`](Self::start_persistent), but after a restart
    /// the server loads its data `per_key` slower per key (redis-server's
    /// `--key-load-delay`), so a test can act while it still answers `-LOADING`.
    pub fn start_persistent_slow_loading(per_key: Duration) -> RedisServer {
        let micros = per_key.as_micros().to_string();
        Self::start_custom(true, Certificates::None, move |_| {
            vec!["--key-load-delay".into(), micros.clone().into()]
        })
    }

    /// Starts a [`stop`](Self::stop)ped server again on the same port and data
    /// directory, and waits until it answers `PING`.
    pub fn resume(&mut self) {
        self.resume_until(Ready::Pong);
    }

    /// Like [`resume`](Self::resume), but returns as soon as the server
    /// accepts connections, possibly still loading its data (answering
    /// `-LOADING` to most commands).
    pub fn resume_loading(&mut self) {
        self.resume_until(Ready::Accepting);
    }

    fn resume_until(&mut self, ready: Ready) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            // The port can stay busy for a moment after the kill: retry until free.
            let child = spawn(
                self.port,
                &self.dir,
                self.persistent,
                self.tls.as_ref(),
                &self.extra,
            )
            .unwrap_or_else(|err| {
                panic!("cannot restart redis-server: {err}");
            });
            self.child = Some(child);
            match self.wait_ready(ready) {
                Ok(()) => return,
                Err(err) if Instant::now() > deadline => {
                    panic!("redis-server did not restart: {err}")
                }
                Err(_) => self.kill(),
            }
        }
    }

    /// Stops the server now (also done on drop).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Closing the guard's stdin makes it kill -9 the server and reap it.
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }

    fn wait_ready(&mut self, ready: Ready) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let mut backoff = Duration::from_millis(2);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut log = String::new();
                    let _ = std::fs::File::open(self.dir.join("redis.log"))
                        .and_then(|mut f| f.read_to_string(&mut log));
                    return Err(format!("redis-server exited with {status}: {}", tail(&log)));
                }
            }
            if let Ok(reply) = command(self.port, &["PING"]) {
                if reply.starts_with("+PONG")
                    || (ready == Ready::Accepting && reply.starts_with("-LOADING"))
                {
                    return Ok(());
                }
                // LOADING: keep waiting.
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no PONG on port {} within {START_DEADLINE:?}",
                    self.port
                ));
            }
            // Polling with a growing interval, bounded by the deadline above.
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }
}

/// What [`RedisServer::wait_ready`] waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// `PING` answered `PONG`: the data is loaded.
    Pong,
    /// Any answer: connections are accepted, the data may still be loading.
    Accepting,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .finish()
    }
}

fn binary() -> String {
    std::env::var("BUSBAR_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// Starts redis-server under a small `sh` guard that kills it as soon as our end
/// of the guard's stdin closes, so a server never outlives the test process (even
/// one held in a `static`, which is never dropped).
///
/// Where util-linux is there (`setsid`, `setpriv`), the server runs in a
/// session of its own, as a Redis service does. Linux's autogroup scheduler
/// shares the CPU between sessions first: in the test's session the server
/// would compete thread by thread with the test's runtime, getting a third of
/// two busy cores instead of a half, which on a 2-core machine cut the queue
/// benchmark by a sixth (raw redis-rs and busbar alike). Outside the test's
/// process group, the server would miss a signal sent to the whole group (a
/// `timeout`, a Ctrl-C) that kills the guard first; `--pdeathsig KILL` has the
/// kernel kill it when its guard dies, however the guard dies.
fn spawn(
    port: u16,
    dir: &Path,
    persistent: bool,
    tls: Option<&Tls>,
    extra: &[OsString],
) -> std::io::Result<Child> {
    match Command::new(binary()).arg("--version").output() {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(concat!(
            r#"command -v setsid >/dev/null 2>&1 && command -v setpriv >/dev/null 2>&1 && "#,
            r#"set -- setsid setpriv --pdeathsig KILL "$@"; "#,
            r#""$@" </dev/null & pid=$!; read -r _; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null"#
        ))
        .arg("sh")
        .arg(binary())
        .arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg(if persistent { "yes" } else { "no" })
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .arg("--daemonize")
        .arg("no")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if persistent {
        // Inserted before the guard's own arguments end: options are order-free.
        cmd.arg("--appendfsync").arg("always");
    }
    if let Some(tls) = tls {
        cmd.arg("--tls-port")
            .arg(tls.port.to_string())
            .arg("--tls-cert-file")
            .arg(&tls.cert)
            .arg("--tls-key-file")
            .arg(&tls.key)
            .arg("--tls-ca-cert-file")
            .arg(&tls.ca)
            .arg("--tls-auth-clients")
            .arg("no");
    }
    cmd.args(extra);
    cmd.spawn()
}

/// Where a server's TLS certificate comes from, if it serves TLS.
#[derive(Clone, Copy)]
pub(crate) enum Certificates<'a> {
    /// No TLS.
    None,
    /// A test CA and certificate of its own.
    Fresh,
    /// These files (the port is the server's own): the nodes of a cluster
    /// share one CA, so a client trusting it trusts every node.
    Shared(&'a Tls),
}

/// A test CA and a server certificate for 127.0.0.1 (P-256 keys), in `dir`.
pub(crate) fn make_certificates(dir: &Path, port: u16) -> Tls {
    let tls = Tls {
        port,
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    if tls.cert.exists() {
        return tls;
    }
    let ca_key = dir.join("ca.key");
    let csr = dir.join("server.csr");
    let ext = dir.join("san.ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").expect("write the certificate extension");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&std::ffi::OsStr>; 3] = [
        [
            &["req", "-x509"][..],
            &ec[..],
            &["-days", "2", "-subj", "/CN=busbar test CA", "-keyout"],
        ]
        .concat()
        .iter()
        .map(|s| std::ffi::OsStr::new(*s))
        .chain([ca_key.as_os_str(), "-out".as_ref(), tls.ca.as_os_str()])
        .collect(),
        [
            &["req"][..],
            &ec[..],
            &["-subj", "/CN=127.0.0.1", "-keyout"],
        ]
        .concat()
        .iter()
        .map(|s| std::ffi::OsStr::new(*s))
        .chain([tls.key.as_os_str(), "-out".as_ref(), csr.as_os_str()])
        .collect(),
        ["x509", "-req", "-days", "2", "-in"]
            .iter()
            .map(|s| std::ffi::OsStr::new(*s))
            .chain([
                csr.as_os_str(),
                "-CA".as_ref(),
                tls.ca.as_os_str(),
                "-CAkey".as_ref(),
                ca_key.as_os_str(),
                "-CAcreateserial".as_ref(),
                "-extfile".as_ref(),
                ext.as_os_str(),
                "-out".as_ref(),
                tls.cert.as_os_str(),
            ])
            .collect(),
    ];
    for args in steps {
        let output = Command::new("openssl").args(&args).output().unwrap_or_else(|err| {
            panic!("cannot run openssl ({err}): install it (Debian/Ubuntu: `apt-get install openssl`)")
        });
        assert!(
            output.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    tls
}

/// A port that was free a moment ago (redis refuses `--port 0`).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("cannot bind a loopback port")
}

pub(crate) fn fresh_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "busbar-redis-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot create a temporary directory");
    dir
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// Sends `args` as a RESP array and reads one reply (simple line, or a bulk string).
fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_nodelay(true)?;
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(out.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if let Some(len) = line.strip_prefix('$') {
        let len: i64 = len.trim().parse().unwrap_or(-1);
        if len >= 0 {
            let mut body = vec![0; len as usize + 2];
            reader.read_exact(&mut body)?;
            return Ok(String::from_utf8_lossy(&body[..len as usize]).into_owned());
        }
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_stops() {
        let mut server = RedisServer::start();
        assert!(server.command(&["PING"]).unwrap().starts_with("+PONG"));
        assert!(server.url().starts_with("redis://127.0.0.1:"));
        assert_ne!(server.port(), 6379);
        let port = server.port();
        server.kill();
        assert!(command(port, &["PING"]).is_err());
    }

    #[test]
    fn tls_server_answers_on_both_ports() {
        let server = RedisServer::start_tls();
        assert!(server.command(&["PING"]).unwrap().starts_with("+PONG"));
        let url = server.tls_url();
        assert!(url.starts_with("rediss://127.0.0.1:"), "{url}");
        assert!(url.contains("tls_ca="), "{url}");
    }

    #[test]
    fn restart_keeps_data_when_persistent() {
        let mut server = RedisServer::start_persistent();
        assert!(server
            .command(&["SET", "k", "v"])
            .unwrap()
            .starts_with("+OK"));
        let mut ran = false;
        server.restart(|| ran = true);
        assert!(ran);
        assert_eq!(server.command(&["GET", "k"]).unwrap(), "v");
    }
}
