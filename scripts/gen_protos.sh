#!/usr/bin/env bash
# Regenerates the Python messages, gRPC stubs and mypy stubs beside the .proto files.
# The proto package memcrm.v1 equals the Python import path, so generated imports need no rewriting.
set -euo pipefail
cd "$(dirname "$0")/../protos"
PY="${PYTHON:-python}"
BIN="$(dirname "$(command -v "$PY")")"
rm -f memcrm/v1/*_pb2.py memcrm/v1/*_pb2.pyi memcrm/v1/*_pb2_grpc.py memcrm/v1/*_pb2_grpc.pyi
"$PY" -m grpc_tools.protoc -I . \
  --plugin=protoc-gen-mypy="$BIN/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$BIN/protoc-gen-mypy_grpc" \
  --python_out=. --mypy_out=. \
  --grpc_python_out=. --mypy_grpc_out=. \
  memcrm/v1/*.proto
