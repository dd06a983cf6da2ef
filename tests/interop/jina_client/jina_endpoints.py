"""What the real Jina 3.34 client learns about a jina-wasm Flow's endpoints.

    python jina_endpoints.py --http-port P1 --grpc-port P2

- gRPC: calls `jina.JinaDiscoverEndpointsRPC/endpoint_discovery` with the
  stub generated into the jina package (what Jina's own gateway calls on its
  executors);
- HTTP: runs the HTTP client's own `_get_endpoints_from_openapi` (what
  `Client.post` does first), then posts 2 documents to `/index` and searches
  them back through the path the client chose.

Prints one JSON line: {"grpc": [...], "http": [...], "searched": N}; exits 1
with a message on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")
os.environ.setdefault("JINA_HIDE_SURVEY", "1")

try:
    import grpc
    from docarray import BaseDoc, DocList
    from google.protobuf import empty_pb2
    from jina import Client
    from jina.proto import jina_pb2_grpc
except ImportError as e:
    sys.exit(f"jina endpoints FAILED: {e} (pip install -r tests/interop/jina_client/requirements.txt)")


class Doc(BaseDoc):
    text: str = ""
    matches: list = []


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    args = parser.parse_args()

    with grpc.insecure_channel(f"127.0.0.1:{args.grpc_port}") as channel:
        stub = jina_pb2_grpc.JinaDiscoverEndpointsRPCStub(channel)
        discovered = list(stub.endpoint_discovery(empty_pb2.Empty(), timeout=20).endpoints)

    client = Client(host="127.0.0.1", port=args.http_port, protocol="http")
    asyncio.run(client._get_endpoints_from_openapi())
    openapi = sorted(client._endpoints)

    docs = DocList[Doc]([Doc(id="a", text="the cat sat."), Doc(id="b", text="a dog ran.")])
    client.post(on="/index", inputs=docs, return_type=DocList[Doc])
    found = client.post(on="/search", inputs=DocList[Doc]([Doc(id="q", text="the cat sat.")]),
                        return_type=DocList[Doc])
    print(json.dumps({"grpc": discovered, "http": openapi, "searched": len(found)}))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - any failure is the test's answer
        sys.exit(f"jina endpoints FAILED: {type(e).__name__}: {e}")
