"""The real `jina.Client` on its default protocol, gRPC, against jina-wasm Flows.

    python jina_grpc_client.py --demo-port P --echo-port Q

`--demo-port` is the gRPC port of the hashing demo Flow
(examples/flows/text-search-hashing.yml); `--echo-port` that of a Flow whose
one Pod, `bad`, runs the `misbehave` test guest (`/echo` returns the documents,
`/panic` traps, `/sleep` sleeps `parameters.ms`). One process runs every
check, in order, and prints one `ok:` line each:

  ready      `is_flow_ready()` is True (a `dry_run` call); False for a closed port
  index      12 corpus documents to /index with request_size=5 and
             return_responses=True: 3 responses, all successful, 12 documents
  search     /search with parameters {"top_k": 3}: 3 matches, the best the
             expected one; the answer's parameters carry 3 as a double (3.0)
  target     /search with target_executor='segment': only the segment Pod
             runs (the answer's routes name no encode or index Pea), so the
             query comes back without an embedding or matches; a pattern that
             is not a regular expression is an error naming `target_executor`
  callbacks  on_done for each of 3 responses of /echo; on_error with the
             executor's name and `panic` for /panic; no exception raised
  error      /panic without on_error: the client raises BadServer naming the
             executor `bad` and the kind `panic`
  stream     10,000 documents to /echo with request_size=100 and prefetch=4:
             all 10,000 come back with their ids, texts and embeddings
  async      the asyncio client (Client(asyncio=True)) streams 6 documents in 3
             requests back
  deadline   /sleep 3 s with timeout=1: the deadline reaches the executor,
             stopped at it (BadServer `timeout`), or the client gives up first
             (ConnectionError, DEADLINE_EXCEEDED): under 2.5 s either way
  garbage    raw bytes that are not a DataRequestProto, and a 5 MiB message:
             gRPC errors (INTERNAL / RESOURCE_EXHAUSTED or OUT_OF_RANGE)
  still      after all that, /echo still answers

Exits 0 after `jina grpc client ok`, 1 with `jina grpc client FAILED: ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")
os.environ.setdefault("JINA_HIDE_SURVEY", "1")

try:
    from typing import Any, Dict, Optional

    import grpc
    import numpy as np
    from docarray import BaseDoc, DocList
    from docarray.typing import NdArray
    from jina import Client
    from jina.excepts import BadServer
except ImportError as e:
    sys.exit(f"jina grpc client FAILED: {e} (pip install -r tests/interop/jina_client/requirements.txt)")


class Match(BaseDoc):
    text: Optional[str] = None
    scores: Optional[Dict[str, Any]] = None


class Doc(BaseDoc):
    text: Optional[str] = None
    tags: Optional[Dict[str, Any]] = None
    embedding: Optional[NdArray] = None
    matches: Optional[DocList[Match]] = None


class Failure(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)


def ok(name: str, detail: str) -> None:
    print(f"ok: {name}: {detail}", flush=True)


def corpus(path: str) -> DocList[Doc]:
    import json

    with open(path) as f:
        return DocList[Doc](Doc(id=d["id"], text=d["text"]) for d in map(json.loads, f) if d)


def ready(port: int) -> None:
    check(Client(host="127.0.0.1", port=port).is_flow_ready(), "is_flow_ready() is False on the Flow")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    check(not Client(host="127.0.0.1", port=closed).is_flow_ready(timeout=5), "is_flow_ready() is True on a closed port")
    ok("ready", "True on the Flow, False on a closed port")


def index(client: Client, docs: DocList[Doc]) -> None:
    responses = client.post("/index", inputs=docs, request_size=5, return_responses=True, return_type=DocList[Doc])
    check(len(responses) == 3, f"/index with request_size=5: {len(responses)} responses, expected 3")
    codes = [r.header.status.code for r in responses]
    check(codes == [0, 0, 0], f"/index: status codes {codes}")
    n = sum(len(r.docs) for r in responses)
    check(n == len(docs), f"/index: {n} documents back, sent {len(docs)}")
    ok("index", f"{len(responses)} responses, {n} documents")


def search(client: Client) -> None:
    query = DocList[Doc]([Doc(text="what makes writes survive a crash")])
    responses = client.post(
        "/search", inputs=query, parameters={"top_k": 3}, return_responses=True, return_type=DocList[Doc]
    )
    check(len(responses) == 1, f"/search: {len(responses)} responses")
    r = responses[0]
    top_k = r.parameters.get("top_k")
    check(isinstance(top_k, float) and top_k == 3.0, f"/search: parameters came back as {r.parameters}")
    docs = r.docs
    matches = docs[0].matches
    check(matches is not None and len(matches) == 3, f"/search top_k=3: matches {matches}")
    check(matches[0].id == "databases-2", f"/search: best match {matches[0].id}, expected databases-2")
    check(all(m.scores for m in matches), f"/search: matches without scores: {[m.scores for m in matches]}")
    ok("search", f"matches {[m.id for m in matches]}, top_k back as {top_k!r}")


def target(client: Client) -> None:
    query = DocList[Doc]([Doc(text="what makes writes survive a crash")])
    responses = client.post(
        "/search", inputs=query, target_executor="segment", return_responses=True, return_type=DocList[Doc]
    )
    r = responses[0]
    ran = [route.executor for route in r.routes]
    check(
        any(e.startswith("segment") for e in ran) and not any(e.startswith(("encode", "index")) for e in ran),
        f"target_executor='segment': routes {ran}",
    )
    doc = r.docs[0]
    check(doc.embedding is None and not doc.matches, f"target_executor='segment': the query came back as {doc}")
    try:
        client.post("/search", inputs=query, target_executor="(unclosed", return_type=DocList[Doc])
        raise Failure("target_executor='(unclosed' did not fail")
    except BadServer as e:
        check("target_executor" in str(e), f"a bad target_executor: {e}")
    ok("target", f"routes {ran}")


def echo_docs(n: int, prefix: str) -> DocList[Doc]:
    return DocList[Doc](
        Doc(id=f"{prefix}-{i}", text=f"text {i}", embedding=np.full(4, i, dtype=np.float32)) for i in range(n)
    )


def callbacks(client: Client) -> None:
    done, errors = [], []
    client.post("/echo", inputs=echo_docs(6, "cb"), request_size=2, on_done=done.append, on_error=errors.append)
    check(len(done) == 3 and not errors, f"/echo: on_done {len(done)} times, on_error {len(errors)} times")
    done, errors = [], []
    client.post("/panic", inputs=echo_docs(1, "p"), on_done=done.append, on_error=errors.append)
    check(len(errors) == 1 and not done, f"/panic: on_done {len(done)} times, on_error {len(errors)} times")
    status = errors[0].header.status
    check(
        status.code == 1 and status.exception.executor == "bad" and status.exception.name == "panic",
        f"/panic: on_error got status {status}",
    )
    ok("callbacks", f"on_done 3 times; on_error: {status.description}")


def error(client: Client) -> None:
    try:
        client.post("/panic", inputs=echo_docs(1, "e"))
    except BadServer as e:
        text = str(e)
        check("bad" in text and "panic" in text, f"/panic: BadServer does not name the executor and kind: {text}")
        ok("error", "BadServer: " + " ".join(text.split())[:160])
        return
    raise Failure("/panic: the client raised nothing")


def stream(client: Client) -> None:
    sent = echo_docs(10_000, "s")
    started = time.monotonic()
    got = client.post("/echo", inputs=sent, request_size=100, prefetch=4, return_type=DocList[Doc])
    took = time.monotonic() - started
    check(len(got) == 10_000, f"/echo 10,000 documents: {len(got)} back")
    by_id = {d.id: d for d in got}
    check(len(by_id) == 10_000, f"/echo: {len(by_id)} distinct ids back")
    for i in (0, 4321, 9999):
        d = by_id[f"s-{i}"]
        check(d.text == f"text {i}" and np.allclose(d.embedding, i), f"/echo: s-{i} came back as {d}")
    ok("stream", f"10,000 documents in 100 requests in {took:.1f} s")


def asyncio_client(port: int) -> None:
    async def run() -> int:
        client = Client(host="127.0.0.1", port=port, asyncio=True)
        n = 0
        async for docs in client.post("/echo", inputs=echo_docs(6, "a"), request_size=2, return_type=DocList[Doc]):
            n += len(docs)
        return n

    n = asyncio.run(run())
    check(n == 6, f"asyncio Client /echo: {n} documents back, sent 6")
    ok("async", f"{n} documents")


def deadline(client: Client) -> None:
    """The client's deadline reaches the Flow: the executor is stopped at it
    and the answer (BadServer, kind `timeout`) races the client's own
    DEADLINE_EXCEEDED (ConnectionError); either way well before 3 s."""
    started = time.monotonic()
    try:
        client.post("/sleep", inputs=echo_docs(1, "d"), parameters={"ms": 3_000}, timeout=1)
    except (ConnectionError, BadServer) as e:
        took = time.monotonic() - started
        text = " ".join(str(e).split())
        check(
            "DEADLINE_EXCEEDED" in text or ("timeout" in text and "bad" in text),
            f"/sleep: the client raised {text}",
        )
        check(took < 2.5, f"/sleep with timeout=1 took {took:.1f} s")
        ok("deadline", f"{type(e).__name__} after {took:.1f} s: {text[:120]}")
        return
    raise Failure("/sleep 3 s with timeout=1: no error")


def garbage(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            "/jina.JinaSingleDataRequestRPC/process_single_data",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        codes = []
        for payload in (b"\xff\xff\xff\xff\x0f", b"\x0a" + b"\x80" * 5 * (1 << 20)):
            try:
                call(payload, timeout=10)
                codes.append(None)
            except grpc.RpcError as e:
                codes.append((e.code(), e.details()))
    check(codes[0] is not None and codes[0][0] == grpc.StatusCode.INTERNAL, f"bytes that are not a request: {codes[0]}")
    check(
        codes[1] is not None and codes[1][0] in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE),
        f"a 5 MiB request: {codes[1]}",
    )
    ok("garbage", f"{codes[0][0].name}: {codes[0][1][:80]}; {codes[1][0].name}: {codes[1][1][:80]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-port", type=int, required=True, help="gRPC port of the hashing demo Flow")
    parser.add_argument("--echo-port", type=int, required=True, help="gRPC port of the misbehave Flow")
    parser.add_argument("--corpus", default="examples/data/corpus.txt")
    args = parser.parse_args()

    def expired(*_):
        print("jina grpc client FAILED: no result within 120 s", flush=True)
        os._exit(1)

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)

    demo = Client(host="127.0.0.1", port=args.demo_port)
    echo = Client(host=f"grpc://127.0.0.1:{args.echo_port}")
    try:
        ready(args.demo_port)
        index(demo, corpus(args.corpus))
        search(demo)
        target(demo)
        callbacks(echo)
        error(echo)
        stream(echo)
        asyncio_client(args.echo_port)
        deadline(echo)
        garbage(args.echo_port)
        got = echo.post("/echo", inputs=echo_docs(2, "z"), return_type=DocList[Doc])
        check(len(got) == 2, f"after the errors /echo gave {len(got)} documents")
        ok("still", "serving")
    except Failure as e:
        print(f"jina grpc client FAILED: {e}", flush=True)
        return 1
    except Exception as e:
        print(f"jina grpc client FAILED: the client raised {type(e).__module__}.{type(e).__name__}: {e}", flush=True)
        return 1
    print("jina grpc client ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
