#!/usr/bin/env bash
# Run every check: install into .venv (if needed), then ruff, mypy and pytest.
# Tests that need Redis or PostgreSQL use the local servers (127.0.0.1:6379, 127.0.0.1:5432).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
