"""The generic reconcile engine: turns adapter observations into actions, conditions and events."""
