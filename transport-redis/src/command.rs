//! Building commands with few allocations: names written from their parts
//! (straight into a command when that is their only use, or into a string in
//! one allocation), commands sized up front, and scripts run by hash.
//!
//! Commands are built for every put, get and call, and on a small machine
//! allocations (contended allocator locks) showed in the throughput.

use std::fmt;

/// A name made of `N` parts, e.g. `[namespace, ":q:{", queue, "}"]`.
#[derive(Clone, Copy)]
pub(crate) struct Joined<'a, const N: usize>(pub(crate) [&'a str; N]);

impl<const N: usize> Joined<'_, N> {
    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.0.iter().map(|part| part.len()).sum()
    }

    /// The name as a string, allocated once.
    pub(crate) fn string(&self) -> String {
        let mut out = String::with_capacity(self.len());
        for part in self.0 {
            out.push_str(part);
        }
        out
    }
}

impl<const N: usize> fmt::Display for Joined<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|part| f.write_str(part))
    }
}

impl<const N: usize> redis::ToRedisArgs for Joined<'_, N> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        let mut arg = out.writer_for_next_arg();
        for part in self.0 {
            // Writing into the command's own buffer cannot fail.
            let _ = arg.write_all(part.as_bytes());
        }
    }
}

/// A command `name` with room for `args` more arguments of `data` bytes in
/// all, so building it allocates twice instead of growing argument by
/// argument.
pub(crate) fn command(name: &str, args: usize, data: usize) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(args + 1, name.len() + data);
    cmd.arg(name);
    cmd
}

/// `EVALSHA` of `script` with `keys` keys, built like [`command`]; the caller
/// adds the keys and arguments (`args` of `data` bytes) and runs it with
/// [`run_script`]. redis-rs's `ScriptInvocation` copies every key and
/// argument into a vector of its own first.
pub(crate) fn script_command(
    script: &redis::Script,
    keys: usize,
    args: usize,
    data: usize,
) -> redis::Cmd {
    let mut cmd = command("EVALSHA", 2 + args, 44 + data);
    cmd.arg(script.get_hash()).arg(keys);
    cmd
}

/// Runs `cmd` from [`script_command`]; when the server does not have the
/// script cached (first use, restart, `SCRIPT FLUSH`), loads it and runs
/// `cmd` again.
pub(crate) async fn run_script<T: redis::FromRedisValue>(
    conn: &mut impl redis::aio::ConnectionLike,
    script: &redis::Script,
    cmd: &redis::Cmd,
) -> redis::RedisResult<T> {
    match cmd.query_async(conn).await {
        Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.prepare_invoke().load_async(conn).await?;
            cmd.query_async(conn).await
        }
        result => result,
    }
}

#[cfg(test)]
mod tests {
    use super::Joined;

    fn args(cmd: &redis::Cmd) -> Vec<Vec<u8>> {
        cmd.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                _ => b"<cursor>".to_vec(),
            })
            .collect()
    }

    #[test]
    fn a_name_is_the_same_written_into_a_command_or_a_string() {
        let key = Joined(["ns", ":q:{", "jobs.resize", "}"]);
        assert_eq!(key.string(), "ns:q:{jobs.resize}");
        assert_eq!(key.to_string(), "ns:q:{jobs.resize}");
        assert_eq!(key.len(), "ns:q:{jobs.resize}".len());
        let mut cmd = redis::cmd("LPUSH");
        cmd.arg(key).arg("item");
        assert_eq!(
            args(&cmd),
            [&b"LPUSH"[..], b"ns:q:{jobs.resize}", b"item"].map(<[u8]>::to_vec)
        );
    }

    #[test]
    fn a_script_command_names_the_script_and_its_keys() {
        let script = redis::Script::new("return 1");
        let mut cmd = super::script_command(&script, 1, 1, 2);
        cmd.arg("k").arg("a");
        assert_eq!(
            args(&cmd),
            [
                b"EVALSHA".to_vec(),
                script.get_hash().as_bytes().to_vec(),
                b"1".to_vec(),
                b"k".to_vec(),
                b"a".to_vec()
            ]
        );
    }
}
