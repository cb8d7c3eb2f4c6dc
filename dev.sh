#!/usr/bin/env bash
# Set everything up (idempotent), then run one job:
#   ./dev.sh demo [demo flags]   the main job: SGLang on the CPU test bed with per-adapter telemetry
#   ./dev.sh test [pytest flags] the test suite (real SGLang servers, real Prometheus)
# Needs: Debian/Ubuntu x86_64 with Python 3.11; run as root or with sudo for apt-get.
set -euo pipefail
cd "$(dirname "$0")"

job="${1:-}"
case "$job" in demo|test) shift ;; *) sed -n '2,5p' "$0"; exit 2 ;; esac

python=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python="$candidate"; break
  fi
done
[ -n "$python" ] || { echo "Python 3.11 is required (sglang 0.5.23 and its torch wheels)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "creating .venv (first run: installing sglang 0.5.23 and torch takes a few minutes)"
  "$python" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet --quiet -e '.[test]'  # -qq: this machine's pip config warns for every package
  touch "$stamp"
fi

if [ "$job" = test ] && ! command -v promtool >/dev/null; then
  sudo_="" ; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi

if [ "$job" = demo ]; then
  exec .venv/bin/lora-telemetry demo "$@"
fi
exec .venv/bin/pytest "$@"
