#!/usr/bin/env bash
# make gke-down: delete the GKE cluster. The snapshot bucket and the Google service
# account are kept unless ACTORMUX_DELETE_BUCKET=yes (they hold the actors' state).
set -euo pipefail
project="${ACTORMUX_GCP_PROJECT:?set ACTORMUX_GCP_PROJECT}"
region="${ACTORMUX_GCP_REGION:-us-central1}"
cluster="${ACTORMUX_GKE_CLUSTER:-actormux}"
gcloud container clusters delete "$cluster" --region="$region" --project="$project" --quiet
if [ "${ACTORMUX_DELETE_BUCKET:-no}" = yes ]; then
    gcloud storage rm --recursive "gs://${project}-actormux-snapshots" --project="$project"
    gcloud iam service-accounts delete "actormux@${project}.iam.gserviceaccount.com" \
        --project="$project" --quiet
fi
