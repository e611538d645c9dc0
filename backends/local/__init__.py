"""The local backend: real gVisor (runsc) actors multiplexed on worker slots of one
Linux machine, driven by the same controller as the simulator.

Pieces: ``store`` (snapshots), ``db`` (SQLite state), ``driver`` (carries out the
controller's commands), ``router`` (the HTTP front door), ``admin`` (the admin API),
``lock`` and ``statedir`` (one instance per run dir and state dir), ``recovery`` (after a
crash), ``cleanup``, ``monitor`` (the double-activation oracle), ``failpoints``. The
sandbox primitives they use are in :mod:`backends.gvisor`.
"""
