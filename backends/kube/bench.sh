#!/usr/bin/env bash
# The real-cluster benchmark: `actormux bench real backend=<kind|gke>` (250-on-8) as a
# Job in the cluster (backends/kube/bench), after `make kind-up` or `make gke-up`.
# The control plane Deployment is scaled to 0 while it runs (the bench takes its Lease
# and drives the worker pods itself) and back to 2 afterwards. The results (JSON, the
# history line, the log) are copied to OUT_DIR. Exit status: the bench's (1 = a
# regression against benchmarks/baselines/real-<backend>.json in the image).
# Usage: bench.sh OUT_DIR [bench overrides, e.g. backend.duration_s=60]
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$#" -lt 1 ]; then
    echo "usage: $0 OUT_DIR [overrides]" >&2
    exit 2
fi
out="$1"
shift
ns=actormux
mkdir -p "$out"
kubectl -n "$ns" scale deployment/actormux-control --replicas=0
kubectl -n "$ns" wait --for=delete pod -l app.kubernetes.io/name=actormux-control \
    --timeout=300s || true
# shellcheck disable=SC2329 # called by the trap
restore() {
    kubectl -n "$ns" delete job actormux-bench --ignore-not-found --wait=false || true
    kubectl -n "$ns" scale deployment/actormux-control --replicas=2 || true
}
trap restore EXIT
kubectl -n "$ns" delete job actormux-bench --ignore-not-found --wait=true
kubectl kustomize backends/kube/bench \
    | kubectl set env --local -f - -o yaml ACTORMUX_BENCH_OVERRIDES="$*" \
    | kubectl apply -f -
kubectl -n "$ns" wait --for=condition=ready pod -l job-name=actormux-bench --timeout=600s
pod="$(kubectl -n "$ns" get pod -l job-name=actormux-bench -o jsonpath='{.items[0].metadata.name}')"
echo "bench running in pod $pod; waiting for it to finish ..."
until kubectl -n "$ns" exec "$pod" -- test -e /results/.done; do
    phase="$(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.status.phase}')"
    if [ "$phase" != Running ]; then
        echo "the bench pod is $phase before it finished" >&2
        kubectl -n "$ns" logs "$pod" >&2 || true
        exit 1
    fi
    sleep 10
done
kubectl -n "$ns" cp "$pod:/results" "$out"
kubectl -n "$ns" exec "$pod" -- touch /results/.collected
cat "$out/bench.log"
exit "$(cat "$out/status")"
