"""The committed CRDs are exactly what the typed API generates (`make crds` regenerates them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from enclave_operator.api import crdgen

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("directory", crdgen.OUT_DIRS)
def test_committed_crds_match_the_typed_api(directory: str) -> None:
    """Both the top-level crds/ and the Helm chart's crds/ hold exactly what the generator writes."""
    expected = crdgen.rendered_files()
    committed = {p.name: p.read_text() for p in (REPO / directory).glob("*.yaml")
                 if p.name != "kopf.dev_clusterkopfpeerings.yaml"}  # kopf's, copied by hack/chartgen.py (test_chart)
    assert sorted(committed) == sorted(expected), f"{directory}/ has other files; run `make crds`"
    for name, content in expected.items():
        assert committed[name] == content, f"{directory}/{name} drifted from the typed API; run `make crds` and commit"


def test_schema_is_structural_without_refs_titles_or_nulls() -> None:
    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for bad in ("$ref", "title", "$defs"):
                assert bad not in node, f"{bad} at {path}"
            assert node.get("type") != "null", f"null type at {path}"
            if "properties" in node or "items" in node:
                assert node.get("type") in ("object", "array"), f"no type at {path}"
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    for model, info in crdgen.KINDS:
        walk(crdgen.openapi_schema(model), info.kind)


def test_every_spec_field_has_a_description_starting_with_its_name() -> None:
    def walk(props: dict[str, dict], path: str) -> None:
        for name, prop in props.items():
            if name in ("apiVersion", "kind", "metadata"):
                continue
            description = prop.get("description", "")
            assert description.startswith(f"{name}:"), f"{path}.{name} description must start with '{name}:'"
            walk(prop.get("properties", {}), f"{path}.{name}")
            walk(prop.get("items", {}).get("properties", {}), f"{path}.{name}[]")

    for model, _ in crdgen.KINDS:
        schema = crdgen.openapi_schema(model)
        walk(schema["properties"]["spec"]["properties"], "spec")


def test_crd_names_category_columns_and_status_subresource() -> None:
    crd = yaml.safe_load(crdgen.rendered_files()["enclave.io_researchprojects.yaml"])
    spec = crd["spec"]
    assert spec["names"]["categories"] == ["enclave"]
    assert "rp" in spec["names"]["shortNames"]
    assert spec["scope"] == "Cluster"
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][:4] == ["Owner", "Members", "Ready", "Cordoned"]
    members = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["members"]
    assert members["x-kubernetes-list-map-keys"] == ["user"], "duplicate members must be rejected by the API server"


def test_data_ingest_options_are_the_engines_options() -> None:
    """The CRD's enum of de-identification options is the engine's list: a new engine option needs an API change."""
    import typing

    from enclave_operator.api.data_ingest import DeidOption
    from enclave_operator.deid.profile import OPTION_NAMES

    assert set(typing.get_args(DeidOption)) == set(OPTION_NAMES)
