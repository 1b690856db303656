"""Deterministic sharding: disjoint, covering, independent of listing order and of other items."""

from __future__ import annotations

import random

import pytest

from enclave_operator.ingest import sharding

pytestmark = pytest.mark.unit

KEYS = [f"1.2.3.{s}/1.2.3.{s}.{r}/1.2.3.{s}.{r}.{i}" for s in range(5) for r in range(4) for i in range(25)]


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 7, 16])
def test_shards_are_disjoint_and_cover_everything(shards: int) -> None:
    parts = [sharding.select(KEYS, i, shards, key=str) for i in range(shards)]
    flat = [k for p in parts for k in p]
    assert len(flat) == len(set(flat)) == len(KEYS)
    assert all(p == sorted(p) for p in parts)


@pytest.mark.parametrize(
    ("shards", "reason"),
    [
        (2, "listing order must not change the split"),
        (5, "listing order must not change the split (odd count)"),
    ],
)
def test_listing_order_does_not_matter(shards: int, reason: str) -> None:
    shuffled = KEYS[:]
    random.Random(7).shuffle(shuffled)
    for i in range(shards):
        assert sharding.select(shuffled, i, shards, key=str) == sharding.select(KEYS, i, shards, key=str), reason


def test_owner_is_a_function_of_the_key_alone() -> None:
    # a shard that starts later and sees more items must still agree on the ones it shares
    owners = {k: sharding.shard_of(k, 4) for k in KEYS}
    grown = KEYS + [f"9.9/{n}" for n in range(100)]
    for i in range(4):
        assert [k for k in sharding.select(grown, i, 4, key=str) if k in owners] == sorted(
            k for k, o in owners.items() if o == i
        )


def test_balance_is_reasonable() -> None:
    sizes = [len(sharding.select(KEYS, i, 4, key=str)) for i in range(4)]
    assert min(sizes) > len(KEYS) / 4 * 0.7, sizes


def test_duplicate_keys_are_kept_once() -> None:
    assert sharding.select(["a", "a", "b"], 0, 1, key=str) == ["a", "b"]


@pytest.mark.parametrize(("index", "shards"), [(-1, 2), (2, 2), (0, 0)], ids=["negative", "too-big", "no-shards"])
def test_bad_index_or_count(index: int, shards: int) -> None:
    with pytest.raises(ValueError):
        sharding.select(KEYS, index, shards, key=str)


def test_known_values_are_pinned() -> None:
    # int(first 8 bytes of sha256) mod n: pinned so that a refactor cannot silently re-split a running ingest
    assert [sharding.shard_of(k, 4) for k in ("d", "e", "h", "x")] == [1, 2, 3, 0]
    assert [sharding.shard_of(k, 7) for k in ("a", "b", "c")] == [4, 0, 3]
