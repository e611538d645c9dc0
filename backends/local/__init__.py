"""The local backend: real gVisor (runsc) actors multiplexed on worker slots of one
Linux machine, driven by the same controller as the simulator.

Pieces: ``names`` (ids, namespaces, the address plan), ``netns`` (worker network
namespaces), ``runsc`` (the sandbox runtime), ``bundle`` (OCI bundles), ``store``
(snapshots), ``db`` (SQLite state), ``httpclient`` (router-to-actor HTTP that always
closes first), ``driver`` (carries out the controller's commands), ``router`` (the
HTTP front door and the admin API), ``cleanup``.
"""
