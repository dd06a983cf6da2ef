"""Validates Kubernetes manifests with kubernetes-validate in --strict mode
against the oldest and the newest Kubernetes version the package bundles.

    python validate.py FILE...

Prints the versions it used on the first line (`versions: 1.25.0 1.37.0`),
then kubernetes-validate's output; exits non-zero if any file fails for
either version.
"""

import importlib.resources
import re
import subprocess
import sys
import os


def bundled_versions():
    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    found = set()
    for entry in root.iterdir():
        m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-local-strict", entry.name)
        if m:
            found.add(tuple(int(x) for x in m.groups()))
    if not found:
        sys.exit("kubernetes-validate bundles no strict schemas")
    return sorted(found)


def main():
    files = sys.argv[1:]
    if not files:
        sys.exit(__doc__)
    versions = bundled_versions()
    chosen = [versions[0], versions[-1]]
    names = [".".join(map(str, v)) for v in chosen]
    print("versions:", *names, flush=True)
    tool = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
    failed = False
    for name in names:
        result = subprocess.run([tool, "--strict", "--quiet", "-k", name, *files])
        failed |= result.returncode != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
