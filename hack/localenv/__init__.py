"""Local environment for the operator: a real Kubernetes control plane and real backend servers on loopback.

Used by `make demo`, by `make down` and by the pytest fixtures in tests/conftest.py. Every server is a
`Service` (runtime.py): started as a child process with its log in the run directory, awaited until it is
ready, and stopped by the PID recorded in `state.json`. Standard library only, so it runs before any
virtualenv exists.
"""
