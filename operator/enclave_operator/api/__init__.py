"""Typed API of the operator (group enclave.io, version v1alpha1): the single source of truth.

CRD YAML in crds/ is generated from these models by `enclave_operator.api.crdgen` (`make crds`);
a unit test fails when the committed CRDs drift from the models.
"""

GROUP = "enclave.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "enclave"
