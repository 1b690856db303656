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


def _lines(err: str) -> list[str]:
    """One cause per line, without kubectl's bullets and the one-cause prefix `The X "y" is invalid: `."""
    lines = [line.lstrip("* ").strip() for line in err.splitlines() if line.strip()]
    return [line.split(" is invalid: ", 1)[1] if " is invalid: " in line else line for line in lines]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s.update(validUntil=["x"]), "spec.validUntil"),
        (lambda s: s["members"][0].update(expires=[1, 2]), "spec.members[0].expires"),
        (lambda s: s.update(validUntil="2030-02-30"), "spec.validUntil"),
        (lambda s: s.update(validUntil="30-01-2030"), "spec.validUntil"),
    ],
)  # fmt: skip
def test_finding_8_7_date_fields_reject_arrays_and_non_dates(crds: Cluster, change, field: str) -> None:  # type: ignore[no-untyped-def]
    code, err = _dry_run(crds, _spec_change(change))
    assert code != 0, "accepted"
    assert any(line.startswith(f"{field}: ") for line in _lines(err)), err


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("compute", "kubernetes", "memory"), "999999999999999999999999Ti", "must be at most 1Pi"),
        (("compute", "kubernetes", "memory"), "0.001m", "must be a whole number of bytes"),
        (("compute", "kubernetes", "cpu"), "200000", "must be at most 100000"),
        (("compute", "kubernetes", "cpu"), 200000, "must be at most 100000"),
        (("compute", "kubernetes", "storage"), "11Pi", "must be at most 10Pi"),
        (("storage", "quota"), "999999999999999999999999Ti", "must be at most 10Pi"),
        (("compute", "slurm", "limits", "mem"), "9536743164062500000Mi", "must be at most 1Pi"),
    ],
)  # fmt: skip
def test_finding_8_5_quantities_are_bounded_with_the_limit_in_the_message(
    crds: Cluster, path: tuple[str, ...], value: object, message: str
) -> None:
    def change(spec: dict) -> None:
        node = spec
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value

    code, err = _dry_run(crds, _spec_change(change))
    field = "spec." + ".".join(path)
    assert code != 0, f"{field}={value} accepted"
    assert any(line.startswith(f"{field}: ") and message in line for line in _lines(err)), err


@pytest.mark.parametrize("name", ["Bad_Name", "a" * 41, "-bad"])
def test_finding_8_10_the_name_rule_is_reported_on_metadata_name(crds: Cluster, name: str) -> None:
    code, err = _dry_run(crds, _renamed(name))
    assert code != 0
    lines = _lines(err)
    assert any(line.startswith("metadata.name: ") for line in lines), err
    assert not any(line.startswith("<nil>") and "metadata.name" in line for line in lines), err
