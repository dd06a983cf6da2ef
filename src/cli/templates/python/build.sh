#!/bin/sh
# Builds {{name}}.wasm from executor.py with componentize-py: the executor,
# the jina_executor SDK (jina_executor/) and a CPython interpreter in one
# component for wit/executor.wit. The first run makes .venv and installs
# componentize-py (requirements.txt) from PyPI; COMPONENTIZE_PY=path uses
# another install.
set -e
cd "$(dirname "$0")"
if [ -z "$COMPONENTIZE_PY" ]; then
    COMPONENTIZE_PY=.venv/bin/componentize-py
    if [ ! -x "$COMPONENTIZE_PY" ]; then
        python3 -m venv .venv
        .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
    fi
fi
"$COMPONENTIZE_PY" -d wit -w executor-world componentize jina_executor.component -p . -o {{name}}.wasm
echo "built {{name}}.wasm"
