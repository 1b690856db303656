"""kopf's diff base kept in memory: what counts as a creation, an update or nothing, and that it writes nothing."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from enclave_operator.diffbase import MemoryDiffBase

PREFIX = "kopf.enclave.io"


def _body(**changes: Any) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": "enclave.io/v1alpha1", "kind": "ResearchProject",
        "metadata": {"name": "onco", "uid": "u-1", "resourceVersion": "1", "generation": 1,
                     "finalizers": ["enclave.io/finalizer"], "labels": {"team": "onco"},
                     "annotations": {"enclave.io/approval": "signed"}},
        "spec": {"owner": "alice", "members": []},
        "status": {"observedGeneration": 1},
    }  # fmt: skip
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = raw
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value
    return kopf.Body(copy.deepcopy(raw))


def _store(storage: MemoryDiffBase, body: kopf.Body) -> kopf.Patch:
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    return patch


def test_unseen_is_a_creation_and_storing_writes_nothing() -> None:
    storage = MemoryDiffBase(PREFIX)
    assert storage.fetch(body=_body()) is None
    assert not _store(storage, _body()), "no PATCH: the whole point"
    assert storage.fetch(body=_body()) == storage.build(body=_body())
    assert len(storage) == 1


def test_status_resource_version_and_kopfs_own_annotations_change_nothing() -> None:
    storage = MemoryDiffBase(PREFIX)
    _store(storage, _body())
    same = [
        _body(status={"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}),
        _body(metadata__resourceVersion="7"),
        _body(metadata__annotations={"enclave.io/approval": "signed", f"{PREFIX}/reconcile": '{"retries": 1}'}),
        _body(metadata__annotations={"enclave.io/approval": "signed",
                                     f"{PREFIX}/last-handled-configuration": "{}"}),  # an older version's
    ]  # fmt: skip
    for body in same:
        assert storage.fetch(body=body) == storage.build(body=body), body


def test_spec_labels_and_annotations_are_changes() -> None:
    storage = MemoryDiffBase(PREFIX)
    _store(storage, _body())
    for body in (_body(spec={"owner": "bob", "members": []}), _body(metadata__labels={"team": "x"}),
                 _body(metadata__annotations={"enclave.io/approve": "yes"})):  # fmt: skip
        old = storage.fetch(body=body)
        assert old is not None and old != storage.build(body=body), body
    _store(storage, _body(spec={"owner": "bob", "members": []}))
    assert storage.fetch(body=_body(spec={"owner": "bob", "members": []})) is not None
    assert storage.fetch(body=_body()) == {}, "the old spec again is a change too"


def test_objects_are_told_apart_by_uid_and_forgotten_at_their_last_state() -> None:
    storage = MemoryDiffBase(PREFIX)
    _store(storage, _body())
    assert storage.fetch(body=_body(metadata__uid="u-2")) is None
    deleting = _body(metadata__deletionTimestamp="2030-01-01T00:00:00Z")
    assert storage.fetch(body=deleting) is not None and len(storage) == 1, "still ours while the finalizer runs"
    gone = _body(metadata__deletionTimestamp="2030-01-01T00:00:00Z", metadata__finalizers=[])
    assert storage.fetch(body=gone) is None and len(storage) == 0
