"""Condition types, condition reasons and event reasons: the words users and tests switch on.

Event reasons read `<Verb>ed<Noun>` for Normal events and `Cannot<Verb><Noun>` for Warning events.
"""

from __future__ import annotations

# Condition types (kstatus + one per part).
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
NAMESPACE_READY = "NamespaceReady"
STORAGE_READY = "StorageReady"
IDENTITY_READY = "IdentityReady"
SCHEDULER_READY = "SchedulerReady"
CORDONED = "Cordoned"
APPROVED = "Approved"

# Condition reasons.
REASON_AVAILABLE = "Available"
REASON_PROGRESSING = "Progressing"
REASON_PARTS_NOT_READY = "PartsNotReady"
REASON_UP_TO_DATE = "UpToDate"
REASON_CREATED = "Created"
REASON_UPDATED = "Updated"
REASON_BACKEND_UNAVAILABLE = "BackendUnavailable"
REASON_BACKEND_ERROR = "BackendError"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_DELETING = "Deleting"
REASON_RECONCILED = "Reconciled"
REASON_MEMBERS_MISSING = "MembersMissing"
REASON_VALIDITY_ENDED = "ValidityEnded"
REASON_WITHIN_VALIDITY = "WithinValidity"
REASON_NOT_OWNED = "NotOwned"
"""The thing exists and belongs to someone else (or was retained and not adopted): nothing is written to it."""

# Event reasons.
EVENT_CREATED = "Created{noun}"
EVENT_UPDATED = "Updated{noun}"
EVENT_DELETED = "Deleted{noun}"
EVENT_RETAINED = "Retained{noun}"
EVENT_CANNOT_OBSERVE = "CannotObserve{noun}"
EVENT_CANNOT_CREATE = "CannotCreate{noun}"
EVENT_CANNOT_UPDATE = "CannotUpdate{noun}"
EVENT_CANNOT_DELETE = "CannotDelete{noun}"
EVENT_INVALID_SPEC = "InvalidSpec"
EVENT_CORDONED = "CordonedProject"
EVENT_UNCORDONED = "UncordonedProject"
EVENT_AWAITING_APPROVAL = "AwaitingApproval"
EVENT_APPROVED = "ApprovedProject"
