#!/usr/bin/env bash
# The end-to-end demo behind `make demo`: segment, encode, index and search a
# small bundled corpus with `jina-wasm run`, one executor per step.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/debug/jina-wasm
WASM=$TARGET/wasm32-wasip2/release
WORK=$(mktemp -d -t jina-wasm-demo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export JINA_WASM_LOG=${JINA_WASM_LOG:-warn}

run() { "$BIN" run "$@"; }

echo "== index: segment each text into sentences, embed them, store them in a workspace"
run --uses "$WASM/sentence_segmenter.wasm" --input examples/data/corpus.txt \
  | run --uses "$WASM/text_encoder.wasm" \
  | run --uses "$WASM/vector_indexer.wasm" --endpoint /index --workspace "$WORK/index" \
      --uses-with '{"traversal": "chunks"}' > /dev/null
echo "   $(wc -l < examples/data/corpus.txt) texts indexed sentence by sentence into $WORK/index ($(du -sh "$WORK/index" | cut -f1))"

echo "== search: the index is reloaded from the workspace (read-only) for each query batch"
printf '%s\n' \
  "why does bread taste sour" \
  "how do animals find food in the dark" \
  "what makes writes survive a crash" \
  "moon and the sea" \
  | run --uses "$WASM/text_encoder.wasm" \
  | run --uses "$WASM/vector_indexer.wasm" --endpoint /search --workspace "$WORK/index" --read-only \
      --parameters '{"top_k": 3}' --output pretty
echo
echo "== done"
