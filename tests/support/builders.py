"""Chainable builders for test objects, used for both inputs and expectations."""

from __future__ import annotations

import copy
from typing import Any


class ProjectBuilder:
    """`ProjectBuilder("onco").member("bob", "member").deletion("Delete").obj()`."""

    def __init__(self, name: str, owner: str = "alice") -> None:
        self._obj: dict[str, Any] = {
            "apiVersion": "enclave.io/v1alpha1",
            "kind": "ResearchProject",
            "metadata": {"name": name},
            "spec": {
                "displayName": f"Project {name}",
                "owner": owner,
                "members": [{"user": owner, "role": "owner"}],
                "validUntil": "2099-12-31",
                "storage": {"quota": "1Gi", "versioning": True},
            },
        }

    def member(self, user: str, role: str = "member", expires: str | None = None) -> ProjectBuilder:
        entry: dict[str, Any] = {"user": user, "role": role}
        if expires:
            entry["expires"] = expires
        self._obj["spec"]["members"].append(entry)
        return self

    def deletion(self, policy: str) -> ProjectBuilder:
        self._obj["spec"]["deletionPolicy"] = policy
        return self

    def storage(self, quota: str, versioning: bool = True) -> ProjectBuilder:
        self._obj["spec"]["storage"] = {"quota": quota, "versioning": versioning}
        return self

    def valid_until(self, date: str) -> ProjectBuilder:
        self._obj["spec"]["validUntil"] = date
        return self

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)

    def spec(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj["spec"])
