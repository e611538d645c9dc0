#!/usr/bin/env bash
# After up.sh: create an actor through the admin API and send it three requests
# through the router (both reached by kubectl port-forward on 127.0.0.1).
set -euo pipefail
ns=actormux
kubectl -n "$ns" port-forward svc/actormux-router 18000:8000 18001:8001 >/dev/null &
forward=$!
trap 'kill "$forward"' EXIT
for _ in $(seq 1 50); do
    curl -s -o /dev/null http://127.0.0.1:18001/ && break
    sleep 0.2
done
token="$(kubectl -n "$ns" get secret actormux-admin-token -o jsonpath='{.data.token}' | base64 -d)"
actor="smoke$(date +%s)"
curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{\"id\": \"$actor\", \"template\": \"counter\"}" http://127.0.0.1:18001/actors
count=0
for _ in 1 2 3; do
    count="$(curl -fsS -X POST -H "Host: $actor.actors.local" http://127.0.0.1:18000/ \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["count"])')"
done
if [ "$count" != 3 ]; then
    echo "smoke: expected count 3, got $count" >&2
    exit 1
fi
echo "smoke: ok ($actor counted to 3)"
