"""Burned-in annotation risk and rectangle blanking of native pixel data.

Why: the attribute profile cannot see text burned into pixels (ultrasound
screens, secondary captures, screenshots). Instances at risk are quarantined
unless the config declares, for their exact Manufacturer + ManufacturerModelName,
the rectangles where that device burns text; those are zeroed first.

A site may also trust a SOP class explicitly (``trustedSopClasses``, with who
configured it and why): its instances are no longer quarantined for what SOP class
and ImageType say about them, but BurnedInAnnotation=YES, a risky modality or a
risky device still quarantine. The trust applied is recorded per instance.

Blanking works on uncompressed (native) pixel data only, byte-wise, so no
numpy or codec is needed. Compressed or unusual layouts are reported as a
quarantine reason instead. Reasons never contain patient data: they only name
code-string attributes (Modality, ImageType, SOP Class) or structural facts.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from .config import PixelConfig, Region, RegionRule, TrustedSopClass

PIXEL_DATA = 0x7FE00010

#: Secondary Capture Image Storage SOP classes (PS3.4), including multi-frame variants.
SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)


class PixelError(Exception):
    """Pixel data cannot be blanked (message is structural, no PHI)."""


def _text(ds: Dataset, keyword: str) -> str:
    val = ds.get(keyword)
    if val is None:
        return ""
    return str(val).strip()


def _values(ds: Dataset, keyword: str) -> list[str]:
    val = ds.get(keyword)
    if val is None:
        return []
    if isinstance(val, str | bytes):
        return [str(val).strip()]
    return [str(v).strip() for v in val]


@dataclass(frozen=True)
class PixelPolicy:
    """Precomputed, case-normalised view of :class:`PixelConfig`."""

    modalities: frozenset[str]
    sop_classes: frozenset[str]
    image_types: frozenset[str]
    devices: tuple[tuple[str, str | None], ...]
    rules: dict[tuple[str, str], RegionRule]
    trusted: dict[str, TrustedSopClass]

    @classmethod
    def from_config(cls, cfg: PixelConfig) -> PixelPolicy:
        return cls(
            modalities=frozenset(m.strip().upper() for m in cfg.riskyModalities),
            sop_classes=SECONDARY_CAPTURE_CLASSES | frozenset(s.strip() for s in cfg.riskySopClasses),
            image_types=frozenset(t.strip().upper() for t in cfg.riskyImageTypes),
            devices=tuple(
                (d.manufacturer.strip().upper(), d.model.strip().upper() if d.model else None) for d in cfg.riskyDevices
            ),
            rules={(r.manufacturer.strip().upper(), r.model.strip().upper()): r for r in cfg.regionRules},
            trusted={t.sopClassUid: t for t in cfg.trustedSopClasses},
        )

    def trusted_class(self, ds: Dataset) -> TrustedSopClass | None:
        """The site's opt-out covering this instance's SOP class, if any."""
        return self.trusted.get(_text(ds, "SOPClassUID"))

    def risk_reasons(self, ds: Dataset) -> list[str]:
        """Why this instance may carry burned-in text (empty when no pixel data or no risk)."""
        if PIXEL_DATA not in ds:
            return []
        reasons = []
        if _text(ds, "BurnedInAnnotation").upper() == "YES":
            reasons.append("BurnedInAnnotation is YES")
        modality = _text(ds, "Modality").upper()
        if modality in self.modalities:
            reasons.append(f"modality {modality} is configured as burn-in risk")
        trusted = self.trusted_class(ds) is not None
        if _text(ds, "SOPClassUID") in self.sop_classes and not trusted:
            reasons.append("SOP class is secondary capture or configured as burn-in risk")
        for value in _values(ds, "ImageType") if not trusted else ():
            v = value.upper()
            if v in self.image_types or "SCREEN" in v:
                reasons.append(f"ImageType contains {v}")
                break
        manu = _text(ds, "Manufacturer").upper()
        model = _text(ds, "ManufacturerModelName").upper()
        for dm, dmodel in self.devices:
            if manu == dm and (dmodel is None or dmodel == model):
                reasons.append("device is configured as burn-in risk")
                break
        return reasons

    def rule_for(self, ds: Dataset) -> RegionRule | None:
        key = (_text(ds, "Manufacturer").upper(), _text(ds, "ManufacturerModelName").upper())
        return self.rules.get(key)


def blank_regions(ds: Dataset, regions: list[Region]) -> int:
    """Zero the given rectangles in every frame of native pixel data; returns frames touched."""
    meta = getattr(ds, "file_meta", None)
    tsyntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if tsyntax is None:
        raise PixelError("transfer syntax unknown; cannot locate pixel data")
    if tsyntax.is_compressed:
        raise PixelError("pixel data is compressed; region blanking needs native pixel data")
    try:
        rows = int(ds.Rows)
        cols = int(ds.Columns)
        spp = int(ds.get("SamplesPerPixel", 1))
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        raise PixelError("image pixel module incomplete") from None
    if bits % 8 != 0:
        raise PixelError(f"BitsAllocated {bits} not supported for blanking")
    if _text(ds, "PhotometricInterpretation").upper() in ("YBR_FULL_422", "YBR_PARTIAL_422"):
        raise PixelError("subsampled photometric interpretation not supported for blanking")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    planar = int(ds.get("PlanarConfiguration", 0) or 0)
    bpp = bits // 8
    frame_len = rows * cols * spp * bpp
    data = bytearray(ds.PixelData)
    if len(data) < frame_len * frames:
        raise PixelError("pixel data shorter than its declared geometry")
    for f in range(frames):
        base = f * frame_len
        for reg in regions:
            x0, y0 = min(reg.x, cols), min(reg.y, rows)
            x1, y1 = min(reg.x + reg.width, cols), min(reg.y + reg.height, rows)
            if x0 >= x1 or y0 >= y1:
                continue
            if planar == 1 and spp > 1:
                plane = rows * cols * bpp
                width = (x1 - x0) * bpp
                zero = bytes(width)
                for s in range(spp):
                    for y in range(y0, y1):
                        off = base + s * plane + (y * cols + x0) * bpp
                        data[off : off + width] = zero
            else:
                width = (x1 - x0) * spp * bpp
                zero = bytes(width)
                for y in range(y0, y1):
                    off = base + (y * cols + x0) * spp * bpp
                    data[off : off + width] = zero
    ds.PixelData = bytes(data)
    ds.BurnedInAnnotation = "NO"
    return frames
