"""De-identification engine for DICOM and FHIR R4, usable without Kubernetes.

Modules: :mod:`.profile` (PS3.15 table), :mod:`.keys` (keyed pseudonyms and date
shifts), :mod:`.dicom` (engine), :mod:`.pixels` (burn-in risk), :mod:`.fhir`
(rule engine), :mod:`.verify` (leak scanner), :mod:`.config`, :mod:`.manifest`,
:mod:`.cli` (the ``enclave-deid`` command). See docs/deid.md.
"""

__version__ = "0.1.0"
