"""What the kind and GKE backends share: the Kubernetes client, the worker pool (a
StatefulSet of worker-agent pods, ``pool.py``) and leader election with a fencing token
(``lease.py``). The Kubernetes API is used for pool changes and leadership only, never on
the request path."""
