"""What the real `jina.Client` (protocol http) raises when a request fails.

    python jina_http_errors.py --port PORT [--endpoint /panic] [--docs 20]

Posts DOCS text documents of 1,000 characters each to ENDPOINT in one request
(the Flow's executor is expected to fail there) and prints one JSON line:
{"raised": "<module>.<class>", "text": str(exception)}, or {"raised": null}
when the post succeeded. jina 3.34 raises ValueError(<the parsed JSON body>)
for an HTTP status other than 2xx (ConnectionError(<header.status.description>)
for 503/504), so `text` is what a user of that client reads first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")
os.environ.setdefault("JINA_HIDE_SURVEY", "1")

from typing import Optional  # noqa: E402

from docarray import BaseDoc, DocList  # noqa: E402
from jina import Client  # noqa: E402


class Doc(BaseDoc):
    text: Optional[str] = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--endpoint", default="/panic")
    parser.add_argument("--docs", type=int, default=20)
    args = parser.parse_args()
    docs = DocList[Doc](Doc(id=f"d{i}", text=("x" * 999) + str(i % 10)) for i in range(args.docs))
    client = Client(host=args.host, port=args.port, protocol="http")
    try:
        client.post(args.endpoint, inputs=docs, request_size=args.docs, return_type=DocList[Doc], timeout=30)
    except Exception as e:  # noqa: BLE001: what the client raised is the result
        print(json.dumps({"raised": f"{type(e).__module__}.{type(e).__name__}", "text": str(e)}), flush=True)
        return 0
    print(json.dumps({"raised": None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
