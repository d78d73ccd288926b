#!/usr/bin/env bash
# Install batcher into .venv and run a sample job end to end against the stand-in relay
# (no API key, no Redis: SQLite and the in-process executor). Set OPENAI_BASE_URL and
# OPENAI_API_KEY first to run the same job against a real relay instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/batcher ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e .
fi
export BATCHER_HOME="${BATCHER_HOME:-$PWD/.batcher}"
if [ -z "${OPENAI_BASE_URL:-}${BATCHER_BASE_URL:-}" ]; then
  .venv/bin/batcher dev-relay --port 8765 --latency 0.1 --fault-rate 0.1 >/dev/null 2>&1 &
  relay=$!
  trap 'kill $relay 2>/dev/null' EXIT
  export OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=sk-dev-not-a-real-key
  for _ in $(seq 50); do
    (echo > /dev/tcp/127.0.0.1/8765) 2>/dev/null && break
    sleep 0.1
  done
fi
.venv/bin/batcher run examples/chat.jsonl -o chat.results.jsonl --new
.venv/bin/batcher jobs --limit 1
head -c 600 chat.results.jsonl; echo
