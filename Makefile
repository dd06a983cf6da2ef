# The two commands a new user needs (see README):
#   make demo   builds everything and runs the end-to-end demo
#   make test   installs the wasm target, builds the guests, runs every test
# Everything else here is a step those two take.

CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
EXAMPLES := passthrough text-encoder sentence-segmenter vector-indexer match-merger
FIXTURES := misbehave wrong-world future-contract

.PHONY: all setup guests build test demo bench fuzz clean-cache

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

# Each decoder fuzzed for FUZZ_SECONDS (default 240) with libFuzzer through
# cargo-fuzz (`cargo install cargo-fuzz` once). No sanitizer (`-s none`: the
# targets are safe Rust, and ASan would rebuild wasmtime instrumented) and the
# dev profile (the first build takes ~20 min on two cores, all of it wasmtime).
# With `-s none` cargo-fuzz passes only stable -C flags; RUSTC_BOOTSTRAP=1 is
# there for a sanitizer run (`-s address`), whose -Z flags the stable toolchain
# would refuse. Not part of `make test`; docs/limits.md has the last run.
FUZZ_SECONDS ?= 240
FUZZ_TARGETS := wire document_json flow_yaml
fuzz:
	@command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz"; exit 1; }
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -s none --dev $$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

clean-cache:
	rm -rf "$${JINA_WASM_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/jina-wasm}"
