"""Reconcilers: per kind, plan the desired state from the spec and drive every part through the engine."""
