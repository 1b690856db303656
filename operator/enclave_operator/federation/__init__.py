"""FederatedNode domain logic without Kubernetes wiring: requirements profiles (data) and their pure
evaluation, hardware measured from Node objects, reachability probes, and the backup worker with its
Job builders. The reconciler (reconcilers/federated_node.py) drives these; nothing here imports kopf.
"""
