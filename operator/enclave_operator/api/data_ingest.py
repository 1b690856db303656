"""DataIngest: move data from a hospital source into a project, or a federated node's store, through
de-identification.

Namespaced, in the namespace of its target (the project's, or the federated node's). The source is one
the platform team defined in the operator configuration (researchers name it; they never see its
credentials). The spec is immutable once
created: an ingest is one governed, provenance-recorded run; a different run is a new DataIngest.
"""

from __future__ import annotations

import datetime
from typing import Literal

import pydantic

from enclave_operator.api.common import (
    DNS_LABEL_PATTERN,
    ApiModel,
    CelRule,
    ConditionedStatus,
    KindInfo,
    PrinterColumn,
)

UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
DeidOption = Literal[
    "retainSafePrivate",
    "retainUIDs",
    "retainDeviceIdentity",
    "retainInstitutionIdentity",
    "retainPatientCharacteristics",
    "retainLongitudinalFullDates",
    "retainLongitudinalModifiedDates",
    "cleanDescriptors",
    "cleanStructuredContent",
    "cleanGraphics",
]
Phase = Literal["Pending", "AwaitingApproval", "Running", "Verifying", "Succeeded", "Failed"]


class DicomWebSelection(ApiModel):
    """DicomWebSelection: which studies to take from a DICOMweb source."""

    studies: list[str] = pydantic.Field(
        default_factory=list,
        description="studies: StudyInstanceUIDs to ingest; empty means every study the query matches.",
        max_length=10000,
        json_schema_extra={"items": {"type": "string", "maxLength": 64, "pattern": UID_PATTERN}},
    )
    query: dict[str, str] = pydantic.Field(
        default_factory=dict,
        description="query: QIDO-RS study-level search parameters, e.g. Modality: CT, StudyDate: 20240101-20241231.",
        json_schema_extra={"maxProperties": 16, "additionalProperties": {"type": "string", "maxLength": 256}},
    )


class S3Selection(ApiModel):
    """S3Selection: which objects to take from an S3 source."""

    bucket: str = pydantic.Field(description="bucket: the source bucket.", min_length=3, max_length=63)
    prefix: str = pydantic.Field("", description="prefix: only objects under this prefix.", max_length=512)
    format: Literal["dicom", "fhir"] = pydantic.Field("dicom", description="format: what the objects hold.")


class SourceRef(ApiModel):
    """SourceRef: a platform-defined source and what to take from it."""

    cel_rules = (
        CelRule(
            "[has(self.dicomweb), has(self.s3)].filter(x, x).size() == 1",
            "exactly one of source.dicomweb or source.s3 must be set",
        ),
    )

    name: str = pydantic.Field(
        description="name: a source defined in the operator configuration (e.g. research-pacs).",
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
    )
    dicomweb: DicomWebSelection | None = pydantic.Field(None, description="dicomweb: studies from a DICOMweb source.")
    s3: S3Selection | None = pydantic.Field(None, description="s3: objects from an S3 source.")


class Deidentification(ApiModel):
    """Deidentification: the PS3.15 profile and options applied to every instance."""

    profile: Literal["basic"] = pydantic.Field(
        "basic", description="profile: the Basic Application Level Confidentiality Profile."
    )
    options: list[DeidOption] = pydantic.Field(
        default_factory=lambda: ["retainLongitudinalModifiedDates"],
        description="options: PS3.15 profile options.",
        max_length=10,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class Destination(ApiModel):
    """Destination: where in the project bucket the de-identified data lands."""

    prefix: str = pydantic.Field(
        description="prefix: object key prefix in the project bucket, ending in '/', e.g. raw/ct-cohort-1/.",
        min_length=2,
        max_length=256,
        pattern=r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*/$",
    )


class DataIngestSpec(ApiModel):
    """DataIngestSpec: what to ingest, how to de-identify it and where to put it."""

    cel_rules = (
        CelRule("self == oldSelf", "spec is immutable; create a new DataIngest for another run"),
        CelRule(
            "[has(self.project), has(self.federatedNode)].filter(x, x).size() == 1",
            "exactly one of spec.project or spec.federatedNode must be set",
        ),
    )

    project: str | None = pydantic.Field(
        None, description="project: the ResearchProject receiving the data.", max_length=40, pattern=DNS_LABEL_PATTERN
    )
    federated_node: str | None = pydantic.Field(
        None,
        description="federatedNode: the FederatedNode whose data store receives the data (instead of a project).",
        max_length=40,
        pattern=DNS_LABEL_PATTERN,
    )
    source: SourceRef = pydantic.Field(description="source: where the data comes from.")
    deidentification: Deidentification = pydantic.Field(
        default_factory=Deidentification, description="deidentification: profile and options."
    )
    destination: Destination = pydantic.Field(description="destination: where the data goes in the project bucket.")
    parallelism: int = pydantic.Field(4, description="parallelism: number of worker shards.", ge=1, le=32)

    @pydantic.model_validator(mode="after")
    def _one_target(self) -> DataIngestSpec:
        """Mirror of the CEL rule, for objects that reached the operator without it (older CRDs)."""
        if (self.project is None) == (self.federated_node is None):
            raise ValueError("exactly one of spec.project or spec.federatedNode must be set")
        return self


class Progress(ApiModel):
    """Progress: counts summed over the worker shards."""

    discovered: int = pydantic.Field(0, description="discovered: items found at the source.", ge=0)
    done: int = pydantic.Field(0, description="done: items de-identified, verified and written (or resumed).", ge=0)
    quarantined: int = pydantic.Field(0, description="quarantined: items withheld (burned-in pixel risk).", ge=0)
    failed: int = pydantic.Field(0, description="failed: items that failed after retries.", ge=0)
    bytes: int = pydantic.Field(0, description="bytes: bytes written to the project bucket.", ge=0)


class DataIngestStatus(ConditionedStatus):
    """DataIngestStatus: where the ingest stands."""

    phase: Phase | None = pydantic.Field(None, description="phase: Pending, AwaitingApproval, Running, Verifying, "
                                         "Succeeded or Failed.")  # fmt: skip
    progress: Progress | None = pydantic.Field(None, description="progress: counts over all shards.")
    manifest: str | None = pydantic.Field(None, description="manifest: s3:// URL of the provenance manifest.",
                                          max_length=512)  # fmt: skip
    approved_by: str | None = pydantic.Field(None, description="approvedBy: the data steward who approved.",
                                             max_length=256)  # fmt: skip
    job: str | None = pydantic.Field(None, description="job: the worker Job's namespace/name.", max_length=256)
    start_time: datetime.datetime | None = pydantic.Field(None, description="startTime: when the workers started.")
    completion_time: datetime.datetime | None = pydantic.Field(
        None, description="completionTime: when the ingest succeeded or failed."
    )


class DataIngest(ApiModel):
    """DataIngest moves data from a hospital source into a project through a verified de-identification Job."""

    spec: DataIngestSpec = pydantic.Field(description="spec: the ingest to run.")
    status: DataIngestStatus | None = pydantic.Field(None, description="status: the observed state.")


KIND = KindInfo(
    kind="DataIngest",
    plural="dataingests",
    singular="dataingest",
    short_names=("di", "ingest"),
    scope="Namespaced",
    description=DataIngest.__doc__ or "",
    printer_columns=(
        PrinterColumn("Project", ".spec.project"),
        PrinterColumn("Node", ".spec.federatedNode"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Done", ".status.progress.done", "integer"),
        PrinterColumn("Discovered", ".status.progress.discovered", "integer"),
        PrinterColumn("Quarantined", ".status.progress.quarantined", "integer", priority=1),
        PrinterColumn("Failed", ".status.progress.failed", "integer", priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
)
