#!/usr/bin/env python3
"""Long fault runs for docs/reliability.md: the `busbar` command against servers
this script starts on free loopback ports, killed on a schedule.

    python3 scripts/soak.py queue  --items 1000000 --every 100000   # redis://
    python3 scripts/soak.py events --items 1000000 --every 100000   # zmq://

queue:  one `busbar queue put` feeds N items through a Redis queue (appendonly
        on); one `busbar queue get --ack` consumer at a time takes them. Every
        EVERY items received, the consumer is killed (SIGKILL) and redis-server
        is stopped (SIGTERM) and started again on the same port and directory.
        At least once: every item must arrive; duplicates are counted.
events: one `busbar pub` publishes N events through a `busbar broker`; a steady
        subscriber reads them all, and a second subscriber is killed and
        started again every EVERY events the steady one received. At most
        once: the steady subscriber must get every event, in order; the
        restarted one's gaps are counted.

Prints one JSON line of figures; exits 1 if anything promised was lost.
Needs `target/release/busbar` (cargo build --release -p busbar-cli) and
redis-server on PATH.
"""
import argparse
import faulthandler
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSBAR = os.environ.get("BUSBAR_BIN", os.path.join(ROOT, "target", "release", "busbar"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, limit=10.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)  # polling a port that has no event to wait on
    raise SystemExit(f"nothing listens on {port} after {limit}s")


class Redis:
    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="busbar-soak-")
        self.proc = None
        self.restarts = 0

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--appendonly", "yes", "--save", "",
             "--logfile", os.path.join(self.dir, "log")],
            start_new_session=True)
        wait_listening(self.port)

    def restart(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.start()
        self.restarts += 1

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def read_back(log):
    log.seek(0)
    return log.read().strip().splitlines()[-3:]


def soak_queue(args):
    redis = Redis()
    redis.start()
    url = f"redis://127.0.0.1:{redis.port}/?namespace=soak"
    env = dict(os.environ, BUSBAR_URL=url)
    seen = {}
    received = 0
    lock = threading.Lock()
    producer_log = tempfile.TemporaryFile(mode="w+")
    producer = subprocess.Popen(
        [BUSBAR, "queue", "put", "soak.q"], env=env, stdin=subprocess.PIPE,
        stderr=producer_log, text=True)

    fed = [0]

    def feed():
        try:
            for n in range(args.items):
                producer.stdin.write(json.dumps({"n": n}) + "\n")
                fed[0] = n + 1
            producer.stdin.close()
        except BrokenPipeError:
            pass  # the producer died: reported with its exit status below

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    kills = 0
    started = time.monotonic()
    try:
        while True:
            with lock:
                if len(seen) >= args.items:
                    break
                mark = received + args.every
            if producer.poll() not in (None, 0):
                break  # nothing more will come: the figures say what was lost
            consumer = subprocess.Popen(
                [BUSBAR, "queue", "get", "soak.q", "--ack", "--count", str(args.items),
                 "--timeout", "60s", "--visibility", "5s"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            done = False
            for line in consumer.stdout:
                n = json.loads(line)["n"]
                with lock:
                    seen[n] = seen.get(n, 0) + 1
                    received += 1
                    done = len(seen) >= args.items
                    if done or received >= mark:
                        break
            if done:
                consumer.kill()  # it would wait out its timeout for more
            elif consumer.poll() is None:
                consumer.kill()
                kills += 1
                redis.restart()
            consumer.wait()
            if len(seen) < args.items and consumer.returncode not in (None, -9, 0):
                if time.monotonic() - started > args.limit:
                    break
        producer.wait(120)
        producer_log.seek(0)
        put_status = producer_log.read().strip().splitlines()
    finally:
        producer.kill()
        redis.stop()
    unique = len(seen)
    figures = {
        "workload": "redis queue, acknowledged receive",
        "items": args.items,
        "received": received,
        "unique": unique,
        "lost": args.items - unique,
        "duplicates": received - unique,
        "consumer_kills": kills,
        "server_restarts": redis.restarts,
        "producer_exit": producer.returncode,
        "fed_to_producer": fed[0],
        "producer_said": put_status[-1] if put_status else "",
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(figures))
    return figures["lost"] == 0 and producer.returncode == 0


def soak_events(args):
    port = free_port()
    broker = subprocess.Popen(
        [BUSBAR, "broker", "--bind", f"tcp://127.0.0.1:{port}"],
        env=dict(os.environ, RUST_LOG=os.environ.get("SOAK_BROKER_RUST_LOG", "off")),
        stdout=subprocess.DEVNULL, stderr=open(os.environ.get("SOAK_BROKER_LOG", os.devnull), "w"),
        start_new_session=True)
    wait_listening(port)
    env = dict(os.environ, BUSBAR_URL=f"zmq://127.0.0.1:{port}")

    def subscriber():
        """A `busbar sub` whose stderr is drained (kept: its warnings) and
        which has said "ready": no sleeping."""
        proc = subprocess.Popen(
            [BUSBAR, "sub", "soak.e", "--buffer", "100000"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = threading.Event()
        proc.said = []

        def drain():
            for line in proc.stderr:
                if line.rstrip().endswith("ready"):
                    ready.set()
                elif "warning" in line or "error" in line:
                    proc.said.append(line.strip())
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        ready.wait(30)
        return proc

    steady = subscriber()
    steady_seen = []
    restarted_sessions = []
    restart_at = threading.Event()
    done = threading.Event()

    def read_steady():
        for line in steady.stdout:
            steady_seen.append(json.loads(line)["payload"]["n"])
            if len(steady_seen) % args.every == 0:
                restart_at.set()
            if len(steady_seen) >= args.items:
                break
        done.set()

    reader = threading.Thread(target=read_steady, daemon=True)
    reader.start()
    started = time.monotonic()
    publisher_log = tempfile.TemporaryFile(mode="w+")
    publisher = subprocess.Popen(
        [BUSBAR, "pub", "soak.e"], env=env, stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=publisher_log, text=True)

    def publish():
        try:
            for n in range(args.items):
                publisher.stdin.write(json.dumps({"n": n}) + "\n")
            publisher.stdin.close()
        except BrokenPipeError:
            print("the publisher exited early:", read_back(publisher_log), file=sys.stderr)
            done.set()

    threading.Thread(target=publish, daemon=True).start()
    kills = 0
    try:
        while not done.is_set():
            other = subscriber()
            got = []
            t = threading.Thread(
                target=lambda: [got.append(json.loads(l)["payload"]["n"]) for l in other.stdout],
                daemon=True)
            t.start()
            while not (restart_at.wait(1) or done.is_set()):
                pass
            restart_at.clear()
            other.kill()
            other.wait()
            t.join(10)
            kills += 1
            restarted_sessions.append(got)
        publisher.wait(args.limit)
        # The steady subscriber runs until killed: give it until its output
        # stops growing, so a lag (reported on its stderr) ends the run too.
        while not done.wait(5):
            before = len(steady_seen)
            if not done.wait(5) and len(steady_seen) == before:
                break
    finally:
        for p in (publisher, steady, broker):
            p.kill()
        reader.join(10)
    in_order = steady_seen == list(range(len(steady_seen)))
    gaps = sum(
        (s[-1] - s[0] + 1 - len(s)) for s in restarted_sessions if s)
    figures = {
        "workload": "zmq events, one steady and one restarted subscriber",
        "events": args.items,
        "steady_received": len(steady_seen),
        "steady_in_order": in_order,
        "steady_warnings": steady.said[-3:],
        "restarted_subscriber_sessions": kills,
        "restarted_received": sum(len(s) for s in restarted_sessions),
        "restarted_gaps_within_sessions": gaps,
        "publisher_exit": publisher.returncode,
        "publisher_said": read_back(publisher_log),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(figures))
    return len(steady_seen) == args.items and in_order and gaps == 0


def main():
    if os.environ.get("SOAK_DEBUG"):
        faulthandler.dump_traceback_later(float(os.environ["SOAK_DEBUG"]), exit=True)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=["queue", "events"])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=100_000)
    parser.add_argument("--limit", type=float, default=1800, help="seconds before giving up")
    args = parser.parse_args()
    if not os.path.exists(BUSBAR):
        raise SystemExit(f"{BUSBAR} is missing: cargo build --release -p busbar-cli")
    ok = soak_queue(args) if args.workload == "queue" else soak_events(args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
