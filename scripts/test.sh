#!/usr/bin/env bash
# The whole test suite, as CI runs it: static checks, then every test (unit, aws, lab, bench).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff"; .venv/bin/ruff check src tests
echo "== mypy"; .venv/bin/mypy
echo "== pytest"
exec .venv/bin/pytest -q -p no:cacheprovider tests "$@"
