# The two commands a new user needs (see README):
#   make demo   builds everything and runs the end-to-end demo
#   make test   installs the wasm target, builds the guests, runs every test
# Everything else here is a step those two take.

CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
EXAMPLES := passthrough text-encoder sentence-segmenter vector-indexer match-merger
FIXTURES := misbehave wrong-world future-contract

.PHONY: all setup guests build test demo bench clean-cache

all: build

# The only tool the build needs besides cargo: the wasm32-wasip2 standard library.
setup:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

# Example executors and test fixtures, compiled once into one target directory.
guests: setup
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(EXAMPLES) $(FIXTURES))

build: guests
	$(CARGO) build

test: guests
	$(CARGO) test -p jina-wasm -p jina-guest-sdk

demo: build
	bash examples/demo.sh

bench: build
	$(CARGO) run --quiet --example bench

clean-cache:
	rm -rf "$${JINA_WASM_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/jina-wasm}"
