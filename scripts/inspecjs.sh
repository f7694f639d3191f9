#!/usr/bin/env bash
# MITRE's inspecjs (npm, Apache-2.0) into .tools/inspecjs: its parser of the Heimdall Data
# Format's exec-json checks `preflight report --format hdf` in tests/test_report_hdf.py, run by
# Node.js. Fetched from the npm registry at a pinned version and checked against the registry's
# sha512 integrity; fetched again only when the version changes.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=2.12.6
INTEGRITY=sha512-XsS4QwuYaknGKJSrkAtiPmpBy/HVRWi4Hsd3U5EaRiYykwnf2BV6SNxedK9QOrFt2geZNWqkaptGXXVMTJtIzQ==
DEST=.tools/inspecjs
if [ -f "$DEST/.version" ] && [ "$(cat "$DEST/.version")" = "$VERSION" ]; then
    exit 0
fi
echo "setup: fetching inspecjs $VERSION (the HDF parser the tests validate with) into $DEST"
"${PYTHON:-python3}" - "$VERSION" "$INTEGRITY" "$DEST" <<'EOF'
import base64, hashlib, io, shutil, sys, tarfile, urllib.request
version, integrity, dest = sys.argv[1:]
url = f"https://registry.npmjs.org/inspecjs/-/inspecjs-{version}.tgz"
with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 - a fixed https URL
    data = response.read()
got = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
if got != integrity:
    sys.exit(f"setup: {url} does not match its pinned integrity ({got})")
shutil.rmtree(dest, ignore_errors=True)
with tarfile.open(fileobj=io.BytesIO(data)) as archive:
    archive.extractall(dest + ".tmp", filter="data")
shutil.move(dest + ".tmp/package", dest)
shutil.rmtree(dest + ".tmp")
with open(f"{dest}/.version", "w") as f:
    f.write(version)
EOF
