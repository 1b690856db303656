"""Judging live objects as GitOps tools do: the chart's Argo CD Lua health check run by gopher-lua (the
interpreter Argo CD embeds, hack/argolua) and Flux's kstatus library (hack/kstatus). The operator's own
`enclave_objects` state (metrics.state_of) must agree with the Lua mapping. Used by
tests/e2e/test_gitops_health.py and by each kind's e2e tests at the states they produce."""

from __future__ import annotations

import functools
from typing import Any

from enclave_operator import metrics
from localenv.runtime import CHART
from support.helm import go_tool, run_json_tool

HEALTH_LUA = CHART / "files" / "argocd" / "health.lua"
ARGO_BY_STATE = {"Ready": "Healthy", "Progressing": "Progressing", "Stalled": "Degraded", "Degraded": "Degraded",
                 "AwaitingApproval": "Suspended", "Cordoned": "Suspended", "Finished": "Healthy",
                 "Deleting": "Progressing"}  # fmt: skip


@functools.cache
def judges() -> tuple[str, str]:
    """(argocd-lua-health, kstatus), built from Go modules if needed (cached by their stamps)."""
    return go_tool("argocd-lua-health", "argolua"), go_tool("kstatus")


def judge(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Argo CD's {status, message}, kstatus's {status, message}) for one object."""
    argo, kstatus = judges()
    (lua,) = run_json_tool(argo, [str(HEALTH_LUA)], [obj])
    (flux,) = run_json_tool(kstatus, [], [obj])
    return lua, flux


def assert_health(obj: dict[str, Any], argo: str, flux: str) -> None:
    lua, kstatus = judge(obj)
    name = f"{obj['kind']} {obj['metadata']['name']}"
    assert lua["status"] == argo, f"{name}: Argo CD says {lua}, expected {argo}; status: {obj.get('status')}"
    assert kstatus["status"] == flux, f"{name}: kstatus says {kstatus}, expected {flux}; status: {obj.get('status')}"
    assert lua["message"], f"{name}: Argo CD shows no message"
    if obj.get("status"):
        state = metrics.state_of(obj["status"], deleting=bool(obj["metadata"].get("deletionTimestamp")))
        assert ARGO_BY_STATE[state] == argo, f"{name}: the operator's enclave_objects state {state} disagrees"
