"""gVisor sandboxes on one Linux host: the pieces every real backend's worker side uses.

``names`` (actor ids, worker namespaces, the address plan), ``proc`` (subprocesses),
``runsc`` (the sandbox runtime), ``bundle`` and ``rootfs`` (OCI bundles with a minimal
read-only root), ``netns`` (worker network namespaces), ``firewall`` (nftables),
``tcpstate`` (the host's view of connections to an actor), ``httpclient`` (HTTP to an
actor that always closes first), ``catalog`` and ``templates/`` (the actor programs).
Nothing here knows about the controller or about a backend's state.
"""
