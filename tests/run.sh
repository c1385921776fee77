#!/usr/bin/env bash
# The test command: works on a fresh machine (see README). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/../deploy/env.sh"
ensure_chromium
ensure_postgis
cd "$REPO_ROOT"
exec "$VENV/bin/python" -m pytest "$@"
