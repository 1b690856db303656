"""Test support: the pluggable cluster, the operator as a process, kubectl, waiting, builders."""
