"""The real API server enforces the generated schema and CEL rules at apply time, naming the field."""

from __future__ import annotations

import pytest
import yaml

from support.builders import ProjectBuilder
from support.cluster import Cluster


def _dry_run(crds: Cluster, obj: dict) -> tuple[int, str]:
    result = crds.run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj), check=False)
    return result.returncode, result.stderr


def test_a_valid_project_is_accepted(crds: Cluster) -> None:
    code, err = _dry_run(crds, ProjectBuilder("valid-one").member("bob", expires="2027-06-30").obj())
    assert code == 0, err


def _renamed(name: str) -> dict:
    return ProjectBuilder(name).obj()


def _spec_change(change) -> dict:  # type: ignore[no-untyped-def]
    obj = ProjectBuilder("p-bad").obj()
    change(obj["spec"])
    return obj


@pytest.mark.parametrize(
    ("obj", "field", "why"),
    [
        (_renamed("Bad_Name"), "metadata.name", "not a DNS label"),
        (_renamed("a" * 41), "metadata.name", "longer than 40 characters"),
        (_spec_change(lambda s: s["members"].append({"user": "bob", "role": "boss"})), "spec.members[1].role",
         "unknown role"),
        (_spec_change(lambda s: s.update(owner="bob")), "spec.owner", "owner not among the members"),
        (_spec_change(lambda s: s["members"].__setitem__(0, {"user": "alice", "role": "member"})), "spec.owner",
         "owner listed without role owner"),
        (_spec_change(lambda s: s["members"].append({"user": "alice", "role": "viewer"})), "spec.members[1]",
         "duplicate member"),
        (_spec_change(lambda s: s["storage"].update(quota="-5Gi")), "spec.storage.quota", "negative quota"),
        (_spec_change(lambda s: s.update(network={"egress": [{"cidr": "10.0.0.0/33"}]})),
         "spec.network.egress[0].cidr", "malformed CIDR"),
        (_spec_change(lambda s: s.update(deletionPolicy="Orphan")), "spec.deletionPolicy", "unknown policy"),
        (_spec_change(lambda s: s.pop("validUntil")), "spec.validUntil", "governance date required"),
    ],
)  # fmt: skip
def test_invalid_projects_are_rejected_naming_the_field(crds: Cluster, obj: dict, field: str, why: str) -> None:
    code, err = _dry_run(crds, obj)
    assert code != 0, f"{why}: accepted"
    assert field in err, f"{why}: error does not name {field}: {err}"


def test_explain_describes_members(crds: Cluster) -> None:
    out = crds.run("explain", "researchproject.spec.members").stdout
    for text in ("user", "role", "expires", "owner, maintainer, member, viewer"):
        assert text in out


def test_category_and_short_name_list_projects(crds: Cluster) -> None:
    crds.apply(yaml.safe_dump(ProjectBuilder("listed-by-category").obj()))
    try:
        assert "listed-by-category" in crds.run("get", "enclave").stdout
        assert "listed-by-category" in crds.run("get", "rp").stdout
    finally:
        crds.run("delete", "researchproject", "listed-by-category", "--wait=false")
