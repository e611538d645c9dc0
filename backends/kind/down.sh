#!/usr/bin/env bash
# make kind-down: delete the kind cluster (and everything actormux put on it).
set -euo pipefail
kind delete cluster --name "${ACTORMUX_KIND_CLUSTER:-actormux}"
