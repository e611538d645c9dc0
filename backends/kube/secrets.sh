#!/usr/bin/env bash
# Create what the manifests reference but the repository must not hold: the agents'
# and the admin API's tokens (random, made once, kept on re-runs) and the
# actormux-config ConfigMap (which backend this is, kind or gke, and where state and
# snapshots live). Usage: secrets.sh BACKEND REDIS_URL SNAPSHOTS STORAGE_OPTIONS_JSON
set -euo pipefail
if [ "$#" -ne 4 ]; then
    echo "usage: $0 BACKEND REDIS_URL SNAPSHOTS STORAGE_OPTIONS_JSON" >&2
    exit 2
fi
ns=actormux
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"
for name in actormux-agent-token actormux-admin-token; do
    if ! kubectl -n "$ns" get secret "$name" >/dev/null 2>&1; then
        kubectl -n "$ns" create secret generic "$name" \
            --from-literal=token="$(openssl rand -hex 32)"
    fi
done
kubectl -n "$ns" create configmap actormux-config \
    --from-literal=backend="$1" --from-literal=redis-url="$2" --from-literal=snapshots="$3" \
    --from-literal=storage-options="$4" --dry-run=client -o yaml | kubectl apply -f -
