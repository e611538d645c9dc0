"""Agent workloads: who sends requests to which actor, when, and how long each takes."""
