"""The real `jina.Client` (protocol http) searching an indexer with Jina's
most common call, `parameters={'top_k': 3}`.

    python jina_search_top_k.py --host 127.0.0.1 --port PORT

The Flow's only Pod is an indexer (vector-indexer or hnsw-indexer). This
script indexes 10 documents with 4-dim embeddings on `/index`, then:

  (a) searches 2 queries with parameters={'top_k': 3}: Jina's client sends
      the number as it pleases (a protobuf Struct makes every number a
      double, `3.0`); each query must come back with exactly 3 matches, the
      nearest first (the document whose embedding the query copies);
  (b) searches with parameters={'top_k': 3.5}: the client must raise, and
      the message it shows must name `top_k` and say it wants a whole number.

Exits 0 after printing one `jina top_k ok: ...` line, 1 with a message
naming what differed (or what the client raised) on any failure.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")
os.environ.setdefault("JINA_HIDE_SURVEY", "1")

try:
    from typing import Any, Dict, List, Optional

    import numpy as np
    from docarray import BaseDoc, DocList
    from docarray.typing import NdArray
    from jina import Client
except ImportError as e:
    sys.exit(f"jina top_k FAILED: {e} (pip install -r tests/interop/jina_client/requirements.txt)")


class Doc(BaseDoc):
    """Sent: an id and an embedding; received: the same with `matches`
    (kept as plain JSON objects: only their ids are checked)."""

    embedding: Optional[NdArray] = None
    matches: Optional[List[Dict[str, Any]]] = None


def vector(i: int) -> np.ndarray:
    """Ten directions far enough apart that the nearest is the same one."""
    angle = i * 0.3
    return np.array([np.cos(angle), np.sin(angle), 0.1 * i, 1.0], dtype=np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--timeout", type=int, default=30)
    args = parser.parse_args()

    def expired(*_):
        print(f"jina top_k FAILED: no result within {3 * args.timeout} s", flush=True)
        os._exit(1)

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(3 * args.timeout)

    client = Client(host=args.host, port=args.port, protocol="http")
    try:
        indexed = DocList[Doc](Doc(id=f"doc-{i}", embedding=vector(i)) for i in range(10))
        client.post("/index", inputs=indexed, return_type=DocList[Doc], timeout=args.timeout)

        queries = DocList[Doc](Doc(id=f"q-{i}", embedding=vector(i)) for i in (2, 7))
        got = client.post("/search", inputs=queries, parameters={"top_k": 3}, return_type=DocList[Doc],
                          timeout=args.timeout)
        if len(got) != 2:
            raise AssertionError(f"(a) 2 queries, {len(got)} answers")
        for query, want in zip(got, (2, 7)):
            ids = [m.get("id") for m in (query.matches or [])]
            if len(ids) != 3 or ids[0] != f"doc-{want}":
                raise AssertionError(f"(a) {query.id}: expected 3 matches starting with doc-{want}, got {ids}")
    except Exception as e:
        print(f"jina top_k FAILED: {type(e).__name__}: {e}", flush=True)
        return 1

    try:
        client.post("/search", inputs=queries, parameters={"top_k": 3.5}, return_type=DocList[Doc],
                    timeout=args.timeout)
        print("jina top_k FAILED: (b) top_k 3.5 was accepted", flush=True)
        return 1
    except Exception as e:
        message = str(e)
        if "top_k" not in message or "whole number" not in message:
            print(f"jina top_k FAILED: (b) the client raised {type(e).__name__} without naming top_k "
                  f"and a whole number: {message[:2000]}", flush=True)
            return 1
    print("jina top_k ok: top_k 3 gave 3 matches per query, top_k 3.5 was refused by name", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
