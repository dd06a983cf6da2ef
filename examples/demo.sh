#!/usr/bin/env bash
# The end-to-end demo behind `make demo`: the text-search Flow
# (examples/flows/text-search.yml) started with `jina-wasm flow`, the bundled
# corpus indexed through its HTTP gateway with `jina-wasm client`, a few
# queries answered with ranked matches, and the Flow stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/debug/jina-wasm
WORK=$(mktemp -d -t jina-wasm-demo.XXXXXX)
export JINA_WASM_LOG=${JINA_WASM_LOG:-warn}

# The Flow file with its paths pointing at this build, its workspace in $WORK.
sed -e "s#\.\./\.\./target/wasm32-wasip2#$(cd "$TARGET" && pwd)/wasm32-wasip2#" \
    -e "s#\.\./\.\./target/models#$(cd "$TARGET" && pwd)/models#" \
    -e "s#\.\./\.\./target/demo-workspace#$WORK/workspace#" \
    examples/flows/text-search.yml > "$WORK/flow.yml"

echo "== the Flow"
"$BIN" flow check "$WORK/flow.yml" | sed 's/^/   /'
"$BIN" flow --uses "$WORK/flow.yml" > "$WORK/ready.json" 2> "$WORK/flow.log" &
FLOW=$!
trap 'kill $FLOW 2>/dev/null || true; wait $FLOW 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 600); do
  [ -s "$WORK/ready.json" ] && break
  kill -0 $FLOW 2>/dev/null || { cat "$WORK/flow.log"; exit 1; }
  sleep 0.1
done
PORT=$(grep -o '"port":[0-9]*' "$WORK/ready.json" | cut -d: -f2)
echo "   gateway at http://127.0.0.1:$PORT"

echo "== index: $(wc -l < examples/data/corpus.txt) texts, segmented, embedded, sharded"
"$BIN" client --port "$PORT" --endpoint /index --input examples/data/corpus.txt > /dev/null

echo "== search: every shard answers, match-merger keeps the best 3"
printf '%s\n' \
  "why does bread taste sour" \
  "how do animals find food in the dark" \
  "what makes writes survive a crash" \
  "moon and the sea" \
  | "$BIN" client --port "$PORT" --endpoint /search --parameters '{"top_k": 3}' --output pretty

kill -TERM $FLOW
wait $FLOW
echo
echo "== done: the Flow stopped, each shard dumped its part of the index"
ls "$WORK/workspace/index" | sed 's/^/   /'
