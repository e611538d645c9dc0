"""Actor programs that run inside gVisor sandboxes (standard library only)."""
