"""What a node's hardware is, measured from Kubernetes Node objects and/or declared in the spec. Pure.

Measured (hardware.source Measured) from the Node objects the node selector matches:

| value | from | over several nodes |
|---|---|---|
| threads | `status.capacity.cpu` (logical CPUs) | sum |
| cores | threads, halved when `...cpu-hardware_multithreading` (below) is `true` | sum; unknown if a label lacks |
| memory | `status.capacity.memory` | sum |
| OS disk size | `status.capacity.ephemeral-storage` (the kubelet's root file system) | smallest |
| OS disk type | SSD when every node has `...storage-nonrotationaldisk=true` (below) | all |
| GPUs | `status.capacity["nvidia.com/gpu"]` (vendor NVIDIA) | sum |
| GPU memory | label `nvidia.com/gpu.memory` (MiB, NVIDIA GPU feature discovery) | smallest |
| GPU architecture | label `nvidia.com/gpu.family` (e.g. ampere) | first |
| OS | `status.nodeInfo.operatingSystem` | all must agree |

The `...` labels are node-feature-discovery's, under `feature.node.kubernetes.io/`.

What a Node object cannot tell (clock, ECC, server grade; and anything a label is missing for) comes from
the declared fields; each value carries its source, which the requirement lines show.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from enclave_operator import quantity
from enclave_operator.api.federated_node import HardwareSpec, Source

T = TypeVar("T")
MULTITHREADING_LABEL = "feature.node.kubernetes.io/cpu-hardware_multithreading"
NONROTATIONAL_LABEL = "feature.node.kubernetes.io/storage-nonrotationaldisk"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
GPU_FAMILY_LABEL = "nvidia.com/gpu.family"
MIB = 2**20


@dataclasses.dataclass(frozen=True)
class Value(Generic[T]):
    """A value and where it came from (Missing when neither measured nor declared)."""

    value: T | None
    source: Source

    @property
    def known(self) -> bool:
        return self.value is not None


MISSING: Value[Any] = Value(None, "Missing")


@dataclasses.dataclass(frozen=True)
class Measured:
    """Totals over the selected Node objects; None where they do not tell."""

    nodes: tuple[str, ...] = ()
    threads: int | None = None
    cores: int | None = None
    memory: int | None = None
    os_disk: int | None = None
    os_disk_ssd: bool | None = None
    gpus: int | None = None
    gpu_memory: int | None = None
    gpu_family: str | None = None
    os: str | None = None

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nodes": list(self.nodes)}
        for key, value in (("threads", self.threads), ("cores", self.cores), ("gpus", self.gpus)):
            if value is not None:
                out[key] = value
        for key, size in (("memory", self.memory), ("ephemeralStorage", self.os_disk), ("gpuMemory", self.gpu_memory)):
            if size is not None:
                out[key] = human_bytes(size)
        return out


def _quantity(value: Any) -> int | None:
    try:
        return int(quantity.parse(str(value)))
    except (ValueError, TypeError):
        return None


def measure(nodes: Sequence[Mapping[str, Any]]) -> Measured:
    """Measure the given Node objects (as dicts); an empty list measures nothing."""
    if not nodes:
        return Measured()
    names, threads, memory, disks, gpus, gpu_memory = [], 0, 0, [], 0, []
    smt: list[str | None] = []
    ssd: list[bool] = []
    families: list[str] = []
    systems: set[str] = set()
    for node in nodes:
        meta = node.get("metadata") or {}
        labels = dict(meta.get("labels") or {})
        status = node.get("status") or {}
        capacity = dict(status.get("capacity") or {})
        names.append(str(meta.get("name", "")))
        cpu = _quantity(capacity.get("cpu", 0)) or 0
        threads += cpu
        memory += _quantity(capacity.get("memory", 0)) or 0
        if (disk := _quantity(capacity.get("ephemeral-storage"))) is not None:
            disks.append(disk)
        smt.append(labels.get(MULTITHREADING_LABEL))
        ssd.append(labels.get(NONROTATIONAL_LABEL) == "true")
        count = _quantity(capacity.get(GPU_RESOURCE, 0)) or 0
        gpus += count
        if count and (mib := _quantity(labels.get(GPU_MEMORY_LABEL))) is not None:
            gpu_memory.append(mib * MIB)
        if count and labels.get(GPU_FAMILY_LABEL):
            families.append(labels[GPU_FAMILY_LABEL])
        if (system := (status.get("nodeInfo") or {}).get("operatingSystem")) is not None:
            systems.add(str(system).lower())
    cores: int | None = None
    if all(flag in ("true", "false") for flag in smt):
        cores = sum(
            (_quantity((n.get("status") or {}).get("capacity", {}).get("cpu", 0)) or 0) // (2 if flag == "true" else 1)
            for n, flag in zip(nodes, smt, strict=True)
        )
    return Measured(
        nodes=tuple(sorted(names)),
        threads=threads,
        cores=cores,
        memory=memory,
        os_disk=min(disks) if disks else None,
        os_disk_ssd=True if all(ssd) else None,
        gpus=gpus,
        gpu_memory=min(gpu_memory) if gpu_memory else None,
        gpu_family=families[0].capitalize() if families else None,
        os={"linux": "Linux", "windows": "Windows"}.get(next(iter(systems)), "Other") if len(systems) == 1 else None,
    )


@dataclasses.dataclass(frozen=True)
class Observed:
    """Every hardware value the profile rules read, with its source."""

    cores: Value[int]
    threads: Value[int]
    ghz: Value[float]
    server_grade: Value[bool]
    memory: Value[int]
    ecc: Value[bool]
    os_disk: Value[int]
    os_disk_type: Value[str]
    gpu_count: Value[int]
    gpu_vendor: Value[str]
    gpu_memory: Value[int]
    gpu_architecture: Value[str]
    os_family: Value[str]
    nodes: tuple[str, ...] = ()


def _declared(value: T | None) -> Value[T]:
    return Value(value, "Declared") if value is not None else MISSING


def _either(measured: T | None, declared: T | None, use_measured: bool) -> Value[T]:
    if use_measured and measured is not None:
        return Value(measured, "Measured")
    return _declared(declared)


def _bytes(value: int | str | None) -> int | None:
    return quantity.to_bytes(value) if value is not None else None


def observe(spec: HardwareSpec, measured: Measured | None) -> Observed:
    """Combine measurements (source Measured) with declarations: a measured value wins over a declared one."""
    m = measured or Measured()
    use = spec.source == "Measured"
    gpu_count = _either(m.gpus, spec.gpu.count, use)
    vendor = Value("NVIDIA", "Measured") if use and m.gpus else _declared(spec.gpu.vendor)
    return Observed(
        cores=_either(m.cores, spec.cpu.cores, use),
        threads=_either(m.threads, spec.cpu.threads, use),
        ghz=_declared(spec.cpu.ghz),
        server_grade=_declared(spec.cpu.server_grade),
        memory=_either(m.memory, _bytes(spec.memory.size), use),
        ecc=_declared(spec.memory.ecc),
        os_disk=_either(m.os_disk, _bytes(spec.os_disk.size), use),
        os_disk_type=_either("SSD" if m.os_disk_ssd else None, spec.os_disk.type, use),
        gpu_count=gpu_count,
        gpu_vendor=vendor,
        gpu_memory=_either(m.gpu_memory, _bytes(spec.gpu.memory), use),
        gpu_architecture=_either(m.gpu_family, spec.gpu.architecture, use),
        os_family=_either(m.os, spec.os.family, use),
        nodes=m.nodes,
    )


def human_bytes(value: int) -> str:
    """Bytes as the largest binary unit that divides them exactly, else one decimal: 64Gi, 1.5Ti."""
    for suffix, size in (("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if value >= size:
            whole, rest = divmod(value, size)
            return f"{whole}{suffix}" if not rest else f"{value / size:.1f}{suffix}"
    return str(value)
