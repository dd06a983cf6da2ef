"""The real `jina.Client` (protocol http) against a jina-wasm Flow.

    python jina_http_client.py --host 127.0.0.1 --port PORT

The Flow's only Pod is a `passthrough` executor: it echoes documents unchanged,
and on `/roundtrip` it decodes and re-encodes them. This script (jina and
docarray v2 from requirements.txt, nothing from the Rust side):

  (a) posts 5 text documents with tags and 4-dim embeddings to `/roundtrip`
      with parameters {"x": 1}, and checks the same ids, texts, tags and
      embeddings (within 1e-6) come back;
  (b) posts 5 documents to `/index` with request_size=2 (so 3 HTTP requests,
      sent concurrently) and checks 3 responses carry all 5 documents back.

What the client does on the wire (jina 3.34.0, jina/clients/base/http.py):
GET /openapi.json once (any failure is ignored), then one POST per batch to
/<endpoint> if the spec lists it as a POST path, else /default if listed,
else /post; the body is {"header": {"request_id", "exec_endpoint"},
"parameters", "data": [docs], "exec_endpoint"} and the reply must be JSON
({"data": [docs], "header": ..., "parameters": ..., "routes": ...}, nothing
else at the top level) with HTTP 200.

Exits 0 after printing one `jina client ok: ...` line, 1 with a message
naming what differed (or what the client raised) on any failure.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

# Before importing jina: no telemetry thread (it would try https://telemetry.jina.ai)
# and no survey banner.
os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")
os.environ.setdefault("JINA_HIDE_SURVEY", "1")

try:
    from typing import Any, Dict, Optional

    import numpy as np
    from docarray import BaseDoc, DocList
    from docarray.typing import NdArray
    from jina import Client
    from jina._docarray import docarray_v2
except ImportError as e:
    sys.exit(f"jina client FAILED: {e} (pip install -r tests/interop/jina_client/requirements.txt)")

if not docarray_v2:
    sys.exit("jina client FAILED: this script needs docarray >= 0.30 (v2); see requirements.txt")

EMBEDDING_TOLERANCE = 1e-6


class Doc(BaseDoc):
    """The documents' schema: the client serializes exactly these fields (plus
    `id`) as JSON, and parses the reply's documents with it (unknown fields
    are ignored, missing ones take these defaults)."""

    text: Optional[str] = None
    tags: Optional[Dict[str, Any]] = None
    embedding: Optional[NdArray] = None  # sent as a JSON list of numbers


class Failure(Exception):
    """A check that failed; the message says what was expected and what came."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)


def documents(prefix: str) -> DocList[Doc]:
    """5 documents: text (one non-ASCII), tags (nested, mixed types) and a
    float32 embedding whose values are not exact in decimal."""
    return DocList[Doc](
        Doc(
            id=f"{prefix}-{i}",
            text=f"document {i}" if i != 3 else "grüße ✓",
            tags={"n": i, "even": i % 2 == 0, "nested": {"k": [i, "v"]}},
            embedding=(np.arange(4, dtype=np.float32) - 1.5) / 3 + i,
        )
        for i in range(5)
    )


def compare(sent: DocList[Doc], got: DocList[Doc], where: str) -> None:
    """Same ids (order-insensitive: batches may come back in any order), and
    for each the same text, tags and embedding."""
    by_id = {d.id: d for d in got}
    check(len(got) == len(sent), f"{where}: sent {len(sent)} documents, got {len(got)} back: {sorted(by_id)}")
    for s in sent:
        g = by_id.get(s.id)
        check(g is not None, f"{where}: document {s.id!r} did not come back (got ids {sorted(by_id)})")
        check(g.text == s.text, f"{where}: {s.id}: text {s.text!r} came back as {g.text!r}")
        check(g.tags == s.tags, f"{where}: {s.id}: tags {s.tags} came back as {g.tags}")
        want = np.asarray(s.embedding, dtype=np.float64)
        have = None if g.embedding is None else np.asarray(g.embedding, dtype=np.float64)
        check(
            have is not None and have.shape == want.shape and np.allclose(have, want, rtol=0, atol=EMBEDDING_TOLERANCE),
            f"{where}: {s.id}: embedding {want.tolist()} came back as {None if have is None else have.tolist()}",
        )


def roundtrip(client: Client, timeout: int) -> int:
    """(a) one request with 5 documents through /roundtrip."""
    sent = documents("rt")
    got = client.post("/roundtrip", inputs=sent, parameters={"x": 1}, return_type=DocList[Doc], timeout=timeout)
    compare(sent, got, "(a) /roundtrip")
    return len(got)


def batched(client: Client, timeout: int) -> int:
    """(b) 5 documents to /index in batches of 2: 3 responses, 5 documents."""
    sent = documents("ix")
    responses = client.post(
        "/index", inputs=sent, request_size=2, return_responses=True, return_type=DocList[Doc], timeout=timeout
    )
    check(len(responses) == 3, f"(b) /index with request_size=2: expected 3 responses, got {len(responses)}")
    got = DocList[Doc]([d for r in responses for d in r.docs])
    compare(sent, got, "(b) /index")
    return len(responses)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="the Flow gateway's host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="the Flow gateway's HTTP port")
    parser.add_argument("--timeout", type=int, default=30, help="seconds allowed for each post (default 30); the whole run gets twice that")
    args = parser.parse_args()

    # A watchdog in case the gateway accepts but never answers.
    def expired(*_):
        print(f"jina client FAILED: no result within {2 * args.timeout} s", flush=True)
        os._exit(1)

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(2 * args.timeout)

    client = Client(host=args.host, port=args.port, protocol="http")
    try:
        docs = roundtrip(client, args.timeout)
        responses = batched(client, args.timeout)
    except Failure as e:
        print(f"jina client FAILED: {e}", flush=True)
        return 1
    except Exception as e:  # what the client raised: see the module docstring and the report
        # ValueError: HTTP status not 2xx (its body); BadServer: header.status.code 1;
        # BadRequestType: the reply is not a DataRequest (e.g. unknown top-level key);
        # ConnectionError / aiohttp errors: 503/504 or nobody listening; TimeoutError: --timeout.
        detail = str(e) or (f"no reply within {args.timeout} s" if isinstance(e, TimeoutError) else repr(e))
        print(f"jina client FAILED: the client raised {type(e).__module__}.{type(e).__name__}: {detail}", flush=True)
        return 1
    print(f"jina client ok: /roundtrip {docs} documents back unchanged, /index {responses} responses with all 5 documents", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
