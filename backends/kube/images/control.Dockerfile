# The control plane's image: python -m backends.kube (router, admin API, controller).
# Build from the repository root:
#   docker build -f backends/kube/images/control.Dockerfile -t actormux-control .
FROM python:3.11-slim-bookworm
WORKDIR /opt/actormux
COPY pyproject.toml README.md ./
COPY control control
COPY sim sim
COPY backends backends
COPY workloads workloads
COPY experiments experiments
RUN pip install --no-cache-dir '.[kube,s3,gcs]'
USER 65534:65534
ENTRYPOINT ["python", "-m", "backends.kube"]
