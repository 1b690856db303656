"""Backend adapters: one module per external thing, each with observe / create / update / delete.

Adapters never import kopf or each other. They raise `enclave_operator.backends.errors` exceptions
whose messages are safe to show users (no secrets, no PHI).
"""
