#!/usr/bin/env bash
# make kind-up: a kind cluster with actormux on it (needs docker, kind, kubectl).
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster="${ACTORMUX_KIND_CLUSTER:-actormux}"
if ! kind get clusters | grep -qx "$cluster"; then
    kind create cluster --name "$cluster" --config backends/kind/kind.yaml
fi
docker build -f backends/kube/images/worker.Dockerfile -t actormux-worker:latest .
docker build -f backends/kube/images/control.Dockerfile -t actormux-control:latest .
kind load docker-image --name "$cluster" actormux-worker:latest actormux-control:latest
ns=actormux
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"
if ! kubectl -n "$ns" get secret actormux-object-store >/dev/null 2>&1; then
    kubectl -n "$ns" create secret generic actormux-object-store \
        --from-literal=AWS_ACCESS_KEY_ID="actormux$(openssl rand -hex 4)" \
        --from-literal=AWS_SECRET_ACCESS_KEY="$(openssl rand -hex 24)"
fi
backends/kube/secrets.sh kind redis://actormux-redis:6379/0 s3://actormux/snapshots \
    '{"s3": {"endpoint_url": "http://actormux-minio:9000"}}'
kubectl apply -k backends/kind/manifests
kubectl -n "$ns" rollout status statefulset/actormux-redis --timeout=300s
kubectl -n "$ns" rollout status deployment/actormux-minio --timeout=300s
kubectl -n "$ns" wait --for=condition=complete job/actormux-bucket --timeout=300s
kubectl -n "$ns" rollout status statefulset/actormux-worker --timeout=600s
kubectl -n "$ns" wait --for=condition=Available deployment/actormux-control --timeout=300s
echo "actormux is up on kind cluster $cluster; try: backends/kind/smoke.sh"
