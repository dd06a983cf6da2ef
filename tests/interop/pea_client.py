"""A Python peer for a running Pea: proves the wire protocol interoperates.

    python pea_client.py --in tcp://127.0.0.1:PORT_IN --out tcp://127.0.0.1:PORT_OUT \\
                         --ctrl tcp://127.0.0.1:PORT_CTRL

The Pea under test binds PULL on its input, PUSH on its output and a ROUTER
control socket, and runs an executor that echoes its documents. This script
(pyzmq + jina_wire.py from this directory, nothing from the Rust side):

  (a) pushes a data request to "/roundtrip" with 3 documents and checks the
      reply: same request id, success, one route entry with outcome 0, and
      the same documents back;
  (b) pushes a data request whose body is garbage and checks the reply has an
      error status of kind "malformed" (docs/protocol.md: with after_error 3
      and an empty body);
  (c) asks STATUS on the control socket and checks the reply is a control
      reply (kind 2) with success status and a JSON body with "healthy": true
      and "requests" >= 2.

Exits 0 after printing one `interop ok: ...` line, non-zero with a message
naming what differed on any failure (or after 10 s without a reply).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jina_wire  # noqa: E402

try:
    import zmq
except ImportError:
    sys.exit("interop FAILED: pyzmq is not installed (pip install -r tests/interop/requirements.txt)")

EMBEDDING_TOLERANCE = 1e-6


class Failure(Exception):
    """A check that failed; the message says what was expected and what came."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)


def new_envelope(kind: int, endpoint: str, parameters: str = "") -> dict:
    return {
        "kind": kind,
        "after_error": 0,
        "request_id": uuid.uuid4().hex,
        "endpoint": endpoint,
        "parameters": parameters,
        "deadline": 0,
        "status": None,
        "parts": [],
        "routes": [],
    }


def receive(sock: zmq.Socket, what: str) -> tuple[dict, bytes]:
    """Receives one message and splits it as docs/protocol.md says: skip one
    empty leading frame (a delimiter), then an envelope and an optional body."""
    try:
        frames = sock.recv_multipart()
    except zmq.Again:
        raise Failure(f"{what}: no reply within the receive timeout") from None
    if len(frames) > 1 and frames[0] == b"":
        frames = frames[1:]
    check(len(frames) in (1, 2), f"{what}: a message has 1 or 2 frames, got {len(frames)}")
    try:
        envelope = jina_wire.decode_envelope(frames[0])
    except ValueError as e:
        raise Failure(f"{what}: the reply's envelope does not decode: {e}") from None
    return envelope, frames[1] if len(frames) == 2 else b""


def documents() -> list[dict]:
    """Three documents with text, a 4-dim embedding and tags; one has a chunk.
    Non-ASCII text and nested tags exercise the UTF-8 and JSON columns."""
    return [
        {
            "id": "doc-0",
            "text": "hello world",
            "embedding": [0.1, 0.2, 0.3, 0.4],
            "tags": {"n": 0, "lang": "en"},
            "chunks": [{"id": "doc-0-c0", "text": "hello", "embedding": [1.0, 0.0, -1.0, 0.5], "tags": {"pos": 0}}],
        },
        {
            "id": "doc-1",
            "text": "grüße ✓",
            "embedding": [-0.25, 1e-3, 123.5, 0.0],
            "tags": {"n": 1, "nested": {"a": [1, 2, "three"], "ok": True}},
        },
        {
            "id": "doc-2",
            "text": "",
            "embedding": [3.0, 2.0, 1.0, 0.0],
            "tags": {"n": 2, "x": 0.5},
        },
    ]


def compare(sent: list[dict], got: list[dict], where: str = "documents") -> None:
    """Ids, texts, embeddings (within 1e-6, after the trip through f32),
    tags and chunks must come back as sent."""
    check(len(got) == len(sent), f"{where}: sent {len(sent)}, got {len(got)} back")
    for i, (s, g) in enumerate(zip(sent, got)):
        at = f"{where}[{i}]"
        check(g.get("id") == s["id"], f"{at}: id {s['id']!r} came back as {g.get('id')!r}")
        check(g.get("text") == s.get("text"), f"{at}: text {s.get('text')!r} came back as {g.get('text')!r}")
        want, have = s.get("embedding") or [], g.get("embedding") or []
        check(
            len(want) == len(have) and all(math.isclose(a, b, rel_tol=0, abs_tol=EMBEDDING_TOLERANCE) for a, b in zip(want, have)),
            f"{at}: embedding {want} came back as {have}",
        )
        check(g.get("tags", {}) == s.get("tags", {}), f"{at}: tags {s.get('tags')} came back as {g.get('tags')}")
        compare(s.get("chunks") or [], g.get("chunks") or [], f"{at}.chunks")


def roundtrip(push: zmq.Socket, pull: zmq.Socket) -> int:
    """(a) documents out and back through the executor."""
    docs = documents()
    envelope = new_envelope(jina_wire.KIND_DATA, "/roundtrip")
    push.send_multipart([jina_wire.encode_envelope(envelope), jina_wire.encode_body(docs)])
    reply, body = receive(pull, "(a) /roundtrip")
    check(reply["request_id"] == envelope["request_id"], f"(a) request id {envelope['request_id']} came back as {reply['request_id']}")
    check(reply["kind"] == jina_wire.KIND_DATA, f"(a) the reply is kind {reply['kind']}, not 0 (data)")
    check(reply["status"] is None, f"(a) the reply's status is an error: {reply['status']}")
    check(len(reply["routes"]) == 1, f"(a) expected exactly 1 route entry, got {reply['routes']}")
    check(reply["routes"][0]["outcome"] == 0, f"(a) route outcome {reply['routes'][0]['outcome']}, not 0 (handled)")
    try:
        got = jina_wire.decode_body(body)
    except ValueError as e:
        raise Failure(f"(a) the reply's body does not decode: {e}") from None
    compare(docs, got)
    return sum(1 + len(d.get("chunks") or []) for d in docs)


def malformed(push: zmq.Socket, pull: zmq.Socket) -> None:
    """(b) a body that does not decode: forwarded with status kind malformed."""
    envelope = new_envelope(jina_wire.KIND_DATA, "/roundtrip")
    push.send_multipart([jina_wire.encode_envelope(envelope), b"\x01\x02"])
    reply, body = receive(pull, "(b) garbage body")
    check(reply["request_id"] == envelope["request_id"], f"(b) request id {envelope['request_id']} came back as {reply['request_id']}")
    check(reply["status"] is not None, "(b) the reply's status is success, expected an error of kind malformed")
    check(reply["status"]["kind"] == "malformed", f"(b) status kind {reply['status']['kind']!r}, not 'malformed'")
    # docs/protocol.md, "Malformed messages": forwarded with an empty body and after_error 3.
    check(reply["after_error"] == 3, f"(b) after_error {reply['after_error']}, the spec says 3 (abort)")
    check(body == b"", f"(b) the body is {len(body)} bytes, the spec says empty")


def status(dealer: zmq.Socket, deadline: float) -> dict:
    """(c) STATUS on the control socket. The request counter may be updated
    just after the Pea sends a reply on, so ask again (until the deadline)
    while it reads less than 2."""
    while True:
        envelope = new_envelope(jina_wire.KIND_CONTROL_REQUEST, "STATUS")
        dealer.send_multipart([jina_wire.encode_envelope(envelope), b""])
        reply, body = receive(dealer, "(c) STATUS")
        check(reply["request_id"] == envelope["request_id"], f"(c) request id {envelope['request_id']} came back as {reply['request_id']}")
        check(reply["kind"] == jina_wire.KIND_CONTROL_REPLY, f"(c) the reply is kind {reply['kind']}, not 2 (control reply)")
        check(reply["endpoint"] == "STATUS", f"(c) the reply's endpoint is {reply['endpoint']!r}, not 'STATUS'")
        check(reply["status"] is None, f"(c) the reply's status is an error: {reply['status']}")
        try:
            answer = json.loads(body)
        except ValueError as e:
            raise Failure(f"(c) the reply body is not JSON: {e}: {body[:200]!r}") from None
        check(isinstance(answer, dict), f"(c) the reply body is not a JSON object: {answer!r}")
        check(answer.get("healthy") is True, f"(c) healthy is {answer.get('healthy')!r}, not true")
        requests = answer.get("requests")
        check(isinstance(requests, int), f"(c) requests is {requests!r}, not a number")
        if requests >= 2:
            return answer
        check(time.monotonic() < deadline, f"(c) requests is {requests}, expected at least 2")
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--in", dest="in_", required=True, metavar="ENDPOINT", help="the Pea's input (it binds PULL)")
    parser.add_argument("--out", required=True, metavar="ENDPOINT", help="the Pea's output (it binds PUSH)")
    parser.add_argument("--ctrl", required=True, metavar="ENDPOINT", help="the Pea's control socket (it binds ROUTER)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each reply (default 10)")
    args = parser.parse_args()

    timeout_ms = int(args.timeout * 1000)
    ctx = zmq.Context()
    sockets = []

    def socket(kind: int, endpoint: str) -> zmq.Socket:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
        sock.setsockopt(zmq.LINGER, 0)  # never hang on exit
        sock.connect(endpoint)
        sockets.append(sock)
        return sock

    try:
        pull = socket(zmq.PULL, args.out)  # connected first, so replies have somewhere to go
        push = socket(zmq.PUSH, args.in_)
        dealer = socket(zmq.DEALER, args.ctrl)
        started = time.monotonic()
        count = roundtrip(push, pull)
        malformed(push, pull)
        answer = status(dealer, time.monotonic() + args.timeout)
        elapsed = time.monotonic() - started
    except Failure as e:
        print(f"interop FAILED: {e}", file=sys.stderr)
        return 1
    except zmq.ZMQError as e:
        print(f"interop FAILED: ZeroMQ: {e}", file=sys.stderr)
        return 1
    finally:
        for sock in sockets:
            sock.close()
        ctx.term()
    print(
        f"interop ok: /roundtrip echoed {count} documents, a garbage body came back 'malformed', "
        f"STATUS healthy with {answer['requests']} requests ({elapsed * 1000:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
