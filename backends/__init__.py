"""Real backends that drive the control plane in wall-clock time (local gVisor, kind, GKE).

None is implemented yet; see the README's status line.
"""
