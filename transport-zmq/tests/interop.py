#!/usr/bin/env python3
"""A busbar client in Python (pyzmq), written from docs/zmq-protocol.md and
docs/wire.md only. Driven by tests/python_interop.rs:

    interop.py ENDPOINT PREFIX

It publishes and receives an event, puts, fetches and acks a queue item, calls
the Rust provider PREFIX.add, sees refused requests answered, then serves PREFIX.mul for one call from Rust
(printing READY when serving) and leaves with BYE. Prints OK at the end; any
failure raises and exits non-zero.
"""

import json
import os
import struct
import sys
import time

import zmq

SIG = b"BBZ1"
HELLO, BYE, SUBSCRIBE, PUBLISH, PUT, FETCH, ACK, SERVE, CALL, REPLY = (
    0x01, 0x03, 0x10, 0x12, 0x20, 0x21, 0x22, 0x30, 0x32, 0x34)
WELCOME, GOODBYE, SUBSCRIBED, EVENT, PUBACK = 0x81, 0x84, 0x90, 0x91, 0x92
OK, ITEM, SERVING, REQUEST, RESULT = 0xA0, 0xA1, 0xB0, 0xB1, 0xB4
ERROR, SUBSCRIBE_ERROR, CALL_ERROR = 0xAF, 0x93, 0xB8
EV, ITEM_KIND, REQ_KIND, REPLY_KIND = 1, 2, 3, 4


def u64(n):
    return struct.pack(">Q", n)


def u32(n):
    return struct.pack(">I", n)


def encode(kind, subject, payload, deadline_ms=None, correlation=None):
    """An envelope in busbar's wire format (docs/wire.md)."""
    flags = (1 if deadline_ms is not None else 0) | (2 if correlation is not None else 0)
    msg_id = os.urandom(16)
    out = bytes([0xBB, 1, kind, flags]) + msg_id + u64(int(time.time() * 1000))
    if deadline_ms is not None:
        out += u64(deadline_ms)
    if correlation is not None:
        out += correlation
    subject = subject.encode()
    out += struct.pack(">H", len(subject)) + subject
    content_type = b"application/json"
    out += bytes([len(content_type)]) + content_type
    out += struct.pack(">H", 0)  # no headers
    body = json.dumps(payload).encode()
    out += struct.pack(">I", len(body)) + body
    out += struct.pack(">H", 0)  # unsigned
    return msg_id, out


def decode(data):
    """(kind, id, subject, correlation, payload) of an envelope."""
    assert data[0] == 0xBB and data[1] == 1, "not a busbar envelope"
    kind, flags = data[2], data[3]
    msg_id = data[4:20]
    pos = 28
    if flags & 1:
        pos += 8
    correlation = None
    if flags & 2:
        correlation = data[pos:pos + 16]
        pos += 16
    (n,) = struct.unpack_from(">H", data, pos)
    subject = data[pos + 2:pos + 2 + n].decode()
    pos += 2 + n
    if flags & 4:
        (n,) = struct.unpack_from(">H", data, pos)
        pos += 2 + n
    pos += 1 + data[pos]
    (headers,) = struct.unpack_from(">H", data, pos)
    pos += 2
    for _ in range(headers * 2):
        (n,) = struct.unpack_from(">H", data, pos)
        pos += 2 + n
    (n,) = struct.unpack_from(">I", data, pos)
    payload = json.loads(data[pos + 4:pos + 4 + n])
    return kind, msg_id, subject, correlation, payload


class Client:
    def __init__(self, endpoint):
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 2000)
        self.socket.connect(endpoint)
        self.send(HELLO, b"pyzmq-interop")
        self.expect(WELCOME)

    def send(self, command, *args):
        self.socket.send_multipart([SIG, bytes([command])] + list(args))

    def expect(self, command, timeout_ms=10000):
        """The arguments of the next message with `command` (others skipped)."""
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            if not self.socket.poll(100):
                continue
            frames = self.socket.recv_multipart()
            assert frames[0] == SIG, frames
            if frames[1][0] == command:
                return frames[2:]
        raise TimeoutError(f"no command 0x{command:02x}")


def main():
    endpoint, prefix = sys.argv[1], sys.argv[2]
    c = Client(endpoint)

    # Publish and receive (our own subscription, and a Rust one).
    topic = f"{prefix}.events"
    c.send(SUBSCRIBE, u64(1), topic.encode())
    assert c.expect(SUBSCRIBED) == [u64(1)]
    _, env = encode(EV, topic, "hello from python")
    c.send(PUBLISH, u64(1), env)
    args = c.expect(EVENT)
    assert args[0] == u64(1)
    kind, _, subject, _, payload = decode(args[1])
    assert (kind, subject, payload) == (EV, topic, "hello from python"), (kind, subject, payload)
    c.expect(PUBACK)

    # Put, fetch with a visibility timeout, ack.
    queue = f"{prefix}.jobs"
    _, env = encode(ITEM_KIND, queue, {"job": 42})
    c.send(PUT, u64(2), env)
    assert c.expect(OK) == [u64(2)]
    c.send(FETCH, u64(3), queue.encode(), u32(1000), u32(30000))
    req, tag, attempt, env = c.expect(ITEM)
    assert req == u64(3) and attempt == u32(1)
    assert decode(env)[4] == {"job": 42}
    c.send(ACK, u64(4), tag)
    assert c.expect(OK) == [u64(4)]

    # Refused requests are answered: a truncated envelope, a bad pattern, a
    # call whose envelope is not a request.
    c.send(PUT, u64(6), env[:-1])
    req, message = c.expect(ERROR)
    assert req == u64(6) and message, message
    c.send(SUBSCRIBE, u64(7), b"a.>.b")
    assert c.expect(SUBSCRIBE_ERROR)[0] == u64(7)
    event_id, env = encode(EV, f"{prefix}.add", 1)
    c.send(CALL, env)
    assert c.expect(CALL_ERROR)[0] == event_id

    # Call a Rust provider.
    deadline = int(time.time() * 1000) + 5000
    request_id, env = encode(REQ_KIND, f"{prefix}.add", [2, 3], deadline_ms=deadline)
    c.send(CALL, env)
    (reply,) = c.expect(RESULT)
    kind, _, _, correlation, payload = decode(reply)
    assert (kind, correlation, payload) == (REPLY_KIND, request_id, 5), (kind, payload)

    # Serve a method a Rust client calls.
    c.send(SERVE, u64(5), f"{prefix}.mul".encode())
    assert c.expect(SERVING) == [u64(5)]
    print("READY", flush=True)
    token, provider, env = c.expect(REQUEST, timeout_ms=20000)
    assert provider == u64(5)
    _, request_id, _, _, (a, b) = decode(env)
    _, reply = encode(REPLY_KIND, f"{prefix}.mul", a * b, correlation=request_id)
    c.send(REPLY, token, reply)

    c.send(BYE)
    c.expect(GOODBYE)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
