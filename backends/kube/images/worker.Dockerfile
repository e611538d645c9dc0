# The worker pod's image: the worker agent (python -m backends.agent) with runsc.
# Build from the repository root:
#   docker build -f backends/kube/images/worker.Dockerfile -t actormux-worker .
FROM python:3.11-slim-bookworm
# runsc from gVisor's apt repository; python3 (Debian's) is what actor sandboxes run
# (/usr/bin/python3 in the read-only root they see); iproute2 and nftables for the
# worker's network namespace.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && curl -fsSL https://gvisor.dev/archive.key \
    | gpg --dearmor -o /usr/share/keyrings/gvisor-archive-keyring.gpg \
 && echo "deb [arch=amd64 signed-by=/usr/share/keyrings/gvisor-archive-keyring.gpg] https://storage.googleapis.com/gvisor/releases release main" \
    > /etc/apt/sources.list.d/gvisor.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends runsc python3 iproute2 nftables \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/actormux
COPY pyproject.toml README.md ./
COPY control control
COPY sim sim
COPY backends backends
COPY workloads workloads
COPY experiments experiments
RUN pip install --no-cache-dir '.[s3,gcs]'
ENTRYPOINT ["python", "-m", "backends.agent"]
