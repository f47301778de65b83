#!/bin/sh
exec "$(dirname "$0")/../.venv/bin/python" "$(dirname "$0")/gpu_check.py" "$@"
