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
