#!/usr/bin/env bash
# Install the MONAI Label server's dependencies into the current Python environment, keeping covseg's pins.
#
#   bash scripts/install-label-server.sh            # uses `python` on PATH (activate covseg's venv first)
#   PYTHON=.venv/bin/python bash scripts/install-label-server.sh
#
# `pip install monailabel` cannot sit beside covseg: its requirements need numpy < 2 (numpymaxflow, pydicom-seg),
# jsonschema < 4, torchvision (whose CPU wheel does not import beside torch 2.13) and sam2 (a CUDA source build).
# So monailabel and pydicom-seg are installed with --no-deps, then the modules the server really imports are
# installed at exact pins, with every package already in the environment held at its installed version
# (a constraints file): nothing covseg pins can move. See docs/monailabel.md.
set -euo pipefail
PY=${PYTHON:-python}
cd "$(dirname "$0")/.."

# 1. the server itself, without its impossible requirement list
NO_DEPS=(monailabel==0.8.5 pydicom-seg==0.4.1 itk-core==5.4.7 itk-io==5.4.7 timeloop==1.0.2)
# 2. what `monailabel.main`, its endpoints, datastore and task bases import at run time
SERVER=(
  fastapi==0.163.2 starlette==1.10.0 uvicorn==0.54.0 pydantic==2.14.3 pydantic-settings==2.16.3
  python-dotenv==1.2.4 python-multipart==0.0.34 httpx==0.28.1 requests==2.34.2 requests-toolbelt==1.0.0
  urllib3==2.8.0 schedule==1.2.2 expiring-dict==1.1.2 cachetools==8.0.0 watchdog==7.1.0
  passlib==1.7.4 PyJWT==2.15.1 pynrrd==1.1.3 dicomweb-client==0.61.2 girder-client==5.0.21 google-auth==2.62.2
  psutil==7.2.2
)

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
# hold everything already installed (covseg's pins included) at its current version; skip editable/local installs
"$PY" -m pip list --format=freeze --exclude-editable 2>/dev/null | grep -E '^[A-Za-z0-9_.-]+==' > "$constraints" || true

"$PY" -m pip install -q --no-deps "${NO_DEPS[@]}"
echo "note: pip may list monailabel's requirements that were skipped on purpose (--no-deps); that is expected" >&2
"$PY" -m pip install -q -c "$constraints" "${SERVER[@]}"

# sanity: the server imports, and pip sees no conflict among what covseg and the server use
"$PY" -c "import covseg.apps.monailabel.compat, monailabel.main, monailabel.interfaces.app" \
  || { echo "error: the MONAI Label server does not import" >&2; exit 1; }
"$PY" - <<'PY'
import subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True).stdout
# monailabel / pydicom-seg were installed --no-deps on purpose: their unmet requirements are expected
ignored = ("monailabel ", "pydicom-seg ")
bad = [line for line in out.splitlines() if line.strip() and not line.lower().startswith(ignored)]
if bad:
    print("error: pip check found conflicts beyond monailabel's --no-deps requirements:", *bad, sep="\n  ")
    sys.exit(1)
print("label server dependencies installed; pip check: only monailabel's/pydicom-seg's --no-deps requirements unmet")
PY
