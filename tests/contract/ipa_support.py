"""Helpers for the FreeIPA contract tests: recordings and a raw JSON-RPC client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
from python_freeipa import ClientMeta

RECORDINGS = Path(__file__).parent / "freeipa" / "recordings"


def recording(name: str) -> dict[str, Any]:
    """One hand-transcribed recording of a real FreeIPA exchange (see its `source`)."""
    return dict(json.loads((RECORDINGS / f"{name}.json").read_text()))


class RawIPA:
    """The JSON-RPC envelope itself (ClientMeta hides `error`, `principal`, `version` and HTTP status)."""

    def __init__(self, facts: dict[str, Any]) -> None:
        self.url, self.ca = facts["url"], facts["ca_cert"]
        self.session = requests.Session()

    def login(self, user: str, password: str) -> requests.Response:
        return self.session.post(
            f"{self.url}/ipa/session/login_password",
            data={"user": user, "password": password},
            headers={"Referer": f"{self.url}/ipa", "Accept": "text/plain"},
            verify=self.ca,  # per request: a session-level verify loses to $REQUESTS_CA_BUNDLE
        )

    def call(
        self, method: str, args: list[Any] | None = None, referer: bool = True, **options: Any
    ) -> requests.Response:
        body = {"method": method, "params": [args or [], {**options, "version": ClientMeta.version}]}
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if referer:
            headers["Referer"] = f"{self.url}/ipa"
        return self.session.post(f"{self.url}/ipa/session/json", data=json.dumps(body), headers=headers, verify=self.ca)
