"""Requirements profiles: YAML files typed by `api.federated_node.RequirementsProfile`.

Built-in profiles ship in this package (`profiles/*.yaml`, incisive-2023); a site adds its own by putting
files into the directories named in `federation.profileDirs`. A profile in a configured directory with a
built-in's name replaces it (a site may pin its own reading of a guideline). Loaded once at start-up:
a broken file stops the operator with an error naming the file and the field, never half a profile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path

import pydantic
import yaml

from enclave_operator import quantity
from enclave_operator.api.federated_node import RequirementsProfile
from enclave_operator.configerror import ConfigError

BUILT_IN = Path(__file__).with_name("profiles")


def _check_quantities(profile: RequirementsProfile) -> None:
    rules = profile.rules
    fields = {
        "rules.memory.minimum": rules.memory.minimum if rules.memory else None,
        "rules.memory.recommended": rules.memory.recommended if rules.memory else None,
        "rules.osDisk.minimum": rules.os_disk.minimum if rules.os_disk else None,
        "rules.dataStorage.minimum": rules.data_storage.minimum if rules.data_storage else None,
        "rules.gpu.recommendedMemory": rules.gpu.recommended_memory if rules.gpu else None,
    }
    for name, value in fields.items():
        if value is not None:
            try:
                quantity.parse(value)
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None


def load_file(path: Path) -> RequirementsProfile:
    """One profile file; ConfigError naming the file and the field."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"requirements profile {path}: cannot read: {error}") from None
    try:
        profile = RequirementsProfile.model_validate(data)
        _check_quantities(profile)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"requirements profile {path}: {where}: {first['msg']}") from None
    except ValueError as error:
        raise ConfigError(f"requirements profile {path}: {error}") from None
    if path.stem != profile.name:
        raise ConfigError(f"requirements profile {path}: name {profile.name!r} must match the file name")
    return profile


@dataclasses.dataclass(frozen=True)
class Profiles:
    """The profiles a node may name, by name."""

    by_name: Mapping[str, RequirementsProfile]

    def get(self, name: str) -> RequirementsProfile | None:
        return self.by_name.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self.by_name)


def _files(directory: Path) -> list[Path]:
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def load(extra_dirs: Iterable[Path] = ()) -> Profiles:
    """The built-in profiles, then each configured directory's (later ones replace earlier ones)."""
    found: dict[str, RequirementsProfile] = {}
    for directory in [BUILT_IN, *extra_dirs]:
        if not directory.is_dir():
            raise ConfigError(f"federation.profileDirs: {directory} is not a directory")
        for path in _files(directory):
            profile = load_file(path)
            found[profile.name] = profile
    return Profiles(found)
