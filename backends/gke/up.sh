#!/usr/bin/env bash
# make gke-up: a GKE Standard cluster with actormux on it (needs gcloud, docker,
# kubectl, and a project you may create resources in).
#   ACTORMUX_GCP_PROJECT (required), ACTORMUX_GCP_REGION (default us-central1),
#   ACTORMUX_GKE_CLUSTER (default actormux), ACTORMUX_WORKER_NODES (default 2)
# Creates: an Artifact Registry repository, the cluster (Workload Identity on) with a
# node pool for worker pods, a GCS bucket for snapshots, a Google service account that
# may use the bucket and that both Kubernetes service accounts act as.
set -euo pipefail
cd "$(dirname "$0")/../.."
project="${ACTORMUX_GCP_PROJECT:?set ACTORMUX_GCP_PROJECT}"
region="${ACTORMUX_GCP_REGION:-us-central1}"
cluster="${ACTORMUX_GKE_CLUSTER:-actormux}"
nodes="${ACTORMUX_WORKER_NODES:-2}"
bucket="${project}-actormux-snapshots"
gsa="actormux@${project}.iam.gserviceaccount.com"
registry="${region}-docker.pkg.dev/${project}/actormux"
gcloud config set project "$project"
gcloud services enable container.googleapis.com artifactregistry.googleapis.com
gcloud artifacts repositories describe actormux --location="$region" >/dev/null 2>&1 \
    || gcloud artifacts repositories create actormux --location="$region" \
        --repository-format=docker
if ! gcloud container clusters describe "$cluster" --region="$region" >/dev/null 2>&1; then
    gcloud container clusters create "$cluster" --region="$region" --num-nodes=1 \
        --workload-pool="${project}.svc.id.goog" --machine-type=e2-standard-4
    gcloud container node-pools create actormux-workers --cluster="$cluster" \
        --region="$region" --num-nodes="$nodes" --machine-type=n2-standard-8 \
        --image-type=UBUNTU_CONTAINERD --workload-metadata=GKE_METADATA
fi
gcloud container clusters get-credentials "$cluster" --region="$region"
gcloud storage buckets describe "gs://$bucket" >/dev/null 2>&1 \
    || gcloud storage buckets create "gs://$bucket" --location="$region" \
        --uniform-bucket-level-access
gcloud iam service-accounts describe "$gsa" >/dev/null 2>&1 \
    || gcloud iam service-accounts create actormux --display-name="actormux snapshots"
gcloud storage buckets add-iam-policy-binding "gs://$bucket" \
    --member="serviceAccount:$gsa" --role=roles/storage.objectAdmin
for ksa in actormux-control actormux-worker; do
    gcloud iam service-accounts add-iam-policy-binding "$gsa" \
        --role=roles/iam.workloadIdentityUser \
        --member="serviceAccount:${project}.svc.id.goog[actormux/${ksa}]"
done
gcloud auth configure-docker "${region}-docker.pkg.dev" --quiet
for image in worker control; do
    docker build -f "backends/kube/images/${image}.Dockerfile" \
        -t "${registry}/actormux-${image}:latest" .
    docker push "${registry}/actormux-${image}:latest"
done
backends/kube/secrets.sh gke redis://actormux-redis:6379/0 "gs://${bucket}/snapshots" '{}'
kubectl apply -k backends/gke/manifests
for ksa in actormux-control actormux-worker; do
    kubectl -n actormux annotate serviceaccount "$ksa" --overwrite \
        "iam.gke.io/gcp-service-account=$gsa"
done
kubectl -n actormux set image statefulset/actormux-worker \
    "agent=${registry}/actormux-worker:latest"
kubectl -n actormux set image deployment/actormux-control \
    "control=${registry}/actormux-control:latest"
kubectl -n actormux rollout status statefulset/actormux-redis --timeout=600s
kubectl -n actormux rollout status statefulset/actormux-worker --timeout=900s
kubectl -n actormux wait --for=condition=Available deployment/actormux-control --timeout=600s
echo "actormux is up on GKE cluster $cluster; try: backends/kind/smoke.sh"
