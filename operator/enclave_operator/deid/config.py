"""De-identification configuration (YAML), validated with pydantic.

Why pydantic: a typo in a hospital's config must stop the run with an error that
names the field (``dicom.options.retainUIDz: extra inputs are not permitted``),
never silently fall back to a less safe default. Every model forbids unknown keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """Configuration file missing, unparsable or invalid (message names the field)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _hex_int(value: Any, bits: int) -> int:
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        try:
            n = int(value, 16)
        except ValueError:
            raise ValueError(f"not a hexadecimal number: {value!r}") from None
    else:
        raise ValueError("expected a hexadecimal string such as '0x0019'")
    if not 0 <= n < (1 << bits):
        raise ValueError(f"out of range for {bits} bits")
    return n


class DicomOptions(_Strict):
    """PS3.15 options (names follow the table's option columns)."""

    retainSafePrivate: bool = False
    retainUIDs: bool = False
    retainDeviceIdentity: bool = False
    retainInstitutionIdentity: bool = False
    retainPatientCharacteristics: bool = False
    retainLongitudinalFullDates: bool = False
    retainLongitudinalModifiedDates: bool = True
    cleanDescriptors: bool = False
    cleanStructuredContent: bool = False
    cleanGraphics: bool = False

    @model_validator(mode="after")
    def _exclusive_dates(self) -> DicomOptions:
        if self.retainLongitudinalFullDates and self.retainLongitudinalModifiedDates:
            raise ValueError("retainLongitudinalFullDates and retainLongitudinalModifiedDates are mutually exclusive")
        return self

    def enabled(self) -> frozenset[str]:
        return frozenset(k for k, v in self.model_dump().items() if v)


class SafePrivateBlock(_Strict):
    """Private elements kept when retainSafePrivate is on: group + creator + element offsets."""

    group: int
    creator: str = Field(min_length=1)
    elements: list[int] = Field(min_length=1, description="element offsets 0x00-0xFF within the block")

    @field_validator("group", mode="before")
    @classmethod
    def _group(cls, v: Any) -> int:
        n = _hex_int(v, 16)
        if n % 2 == 0:
            raise ValueError("private groups are odd")
        return n

    @field_validator("elements", mode="before")
    @classmethod
    def _elements(cls, v: Any) -> list[int]:
        if not isinstance(v, list):
            raise ValueError("expected a list of element offsets")
        return [_hex_int(x, 8) for x in v]


class Region(_Strict):
    x: int = Field(ge=0)
    y: int = Field(ge=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class RegionRule(_Strict):
    """Rectangles to blank for one device (exact Manufacturer + ManufacturerModelName)."""

    manufacturer: str
    model: str
    regions: list[Region] = Field(min_length=1)


class DeviceMatch(_Strict):
    manufacturer: str
    model: str | None = None


class TrustedSopClass(_Strict):
    """An explicit, audited opt-out from burned-in-text quarantine for one SOP class.

    Why: secondary captures are quarantined by default because screens and scanned documents carry
    burned-in text. Some sources produce SC instances known to be clean (e.g. derived maps from a
    validated pipeline); a site may declare that, per SOP class, under a name and a reason that the
    run manifest records next to every instance admitted this way.
    """

    sopClassUid: str = Field(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64, description="the SOP Class UID trusted")
    configuredBy: str = Field(min_length=1, max_length=256, description="who declared it (recorded in manifests)")
    reason: str = Field(min_length=1, max_length=1024, description="why this class carries no burned-in text")


class PixelConfig(_Strict):
    """Burned-in annotation risk detection (see pixels.py)."""

    riskyModalities: list[str] = Field(default_factory=lambda: ["US"])
    riskySopClasses: list[str] = Field(default_factory=list)
    riskyImageTypes: list[str] = Field(
        default_factory=lambda: ["SECONDARY", "SCREEN", "SCREEN SHOT", "SCREENSHOT", "CAPTURE"]
    )
    riskyDevices: list[DeviceMatch] = Field(default_factory=list)
    regionRules: list[RegionRule] = Field(default_factory=list)
    trustedSopClasses: list[TrustedSopClass] = Field(
        default_factory=list,
        description="SOP classes whose instances are admitted despite the SOP-class and ImageType signals "
        "(BurnedInAnnotation YES, risky modalities and devices still quarantine)",
    )

    @field_validator("trustedSopClasses")
    @classmethod
    def _unique_trusted(cls, value: list[TrustedSopClass]) -> list[TrustedSopClass]:
        uids = [t.sopClassUid for t in value]
        if len(set(uids)) != len(uids):
            raise ValueError("each sopClassUid may be trusted once")
        return value


class DicomConfig(_Strict):
    options: DicomOptions = Field(default_factory=DicomOptions)
    safePrivateTags: list[SafePrivateBlock] = Field(default_factory=list)
    pseudonymize: bool = Field(default=True, description="PatientID/PatientName/AccessionNumber get keyed pseudonyms")
    pixels: PixelConfig = Field(default_factory=PixelConfig)


class FhirRule(_Strict):
    """One rule in Microsoft FHIR anonymizer ``fhirPathRules`` shape."""

    path: str = Field(min_length=1)
    method: Literal["keep", "redact", "dateShift", "cryptoHash", "substitute", "generalize"]
    replaceWith: Any = None
    cases: dict[str, Any] | None = None
    otherValues: Literal["redact", "keep"] = "redact"

    @model_validator(mode="after")
    def _method_args(self) -> FhirRule:
        if self.method == "substitute" and self.replaceWith is None:
            raise ValueError("method 'substitute' needs 'replaceWith'")
        if self.method == "generalize" and not self.cases:
            raise ValueError("method 'generalize' needs 'cases'")
        return self


class FhirConfig(_Strict):
    patientIdentifierSystem: str | None = Field(
        default=None, description="identifier.system of the MRN used as the patient key"
    )
    fhirPathRules: list[FhirRule] | None = Field(default=None, description="None = built-in defaults")


class DeidConfig(_Strict):
    dicom: DicomConfig = Field(default_factory=DicomConfig)
    fhir: FhirConfig = Field(default_factory=FhirConfig)


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid config: " + "; ".join(parts)


def parse_config(data: Any) -> DeidConfig:
    """Validate an already-parsed mapping (``None`` means all defaults)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("invalid config: top level must be a mapping")
    try:
        return DeidConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc)) from None


def load_config(path: str | Path | None) -> DeidConfig:
    """Load and validate a YAML config file; ``None`` gives the defaults."""
    if path is None:
        return DeidConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config is not valid YAML{where}") from None
    return parse_config(data)
