from __future__ import annotations

import pytest

from enclave_operator import quantity


@pytest.mark.parametrize(
    ("text", "expected", "why"),
    [
        ("500Gi", 500 * 2**30, "binary suffix"),
        ("2Ti", 2 * 2**40, "tebibytes"),
        ("1G", 10**9, "decimal suffix"),
        (64, 64, "plain integer"),
        ("1.5Ki", 1536, "fraction with binary suffix"),
        ("250m", 1, "millis round up to a whole byte"),
        ("1e3", 1000, "exponent"),
    ],
)
def test_to_bytes(text: int | str, expected: int, why: str) -> None:
    assert quantity.to_bytes(text) == expected, why


@pytest.mark.parametrize("text", ["-5Gi", "5GB", "", "Gi", -1, "1.2.3"])
def test_rejects_non_quantities(text: int | str) -> None:
    with pytest.raises(ValueError):
        quantity.to_bytes(text)


@pytest.mark.parametrize(
    ("desired", "read_back", "why"),
    [
        ("0.001m", "1m", "finer than a thousandth rounds up"),
        ("1.0005", "1001m", "cpu with four decimals"),
        ("999999999999999999999999Ti", "9223372036854775807", "clamped to 2^63-1"),
        ("1.5", "1500m", "same value, other spelling"),
        ("32Gi", "32Gi", "unchanged"),
    ],
)  # fmt: skip
def test_finding_8_5_canonical_values_match_what_the_api_server_reads_back(desired: str, read_back: str,
                                                                           why: str) -> None:  # fmt: skip
    assert quantity.canonical(desired) == quantity.canonical(read_back), why


def test_finding_8_5_the_object_comparison_uses_canonical_values() -> None:
    from enclave_operator.backends.kube_objects import covers

    assert covers({"hard": {"requests.cpu": "1m", "limits.cpu": "1001m"}},
                  {"hard": {"requests.cpu": "0.001m", "limits.cpu": "1.0005"}})  # fmt: skip
    assert not covers({"hard": {"requests.cpu": "2"}}, {"hard": {"requests.cpu": "1"}})
