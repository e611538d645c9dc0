# The control plane's image: `actormux serve backend=kind|gke` (router, admin API,
# controller; the Deployment's command) and `actormux bench` for the bench Job
# (backends/kube/bench), which runs experiments in the cluster: hence the configs, the
# trace and the bench baselines, and an editable install (the configs are found beside
# the code). The entrypoint, python -m backends.kube, is the same without Hydra.
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
COPY conf conf
COPY data data
COPY benchmarks/baselines benchmarks/baselines
RUN pip install --no-cache-dir -e '.[kube,s3,gcs]'
ENV MPLCONFIGDIR=/tmp/matplotlib
USER 65534:65534
ENTRYPOINT ["python", "-m", "backends.kube"]
