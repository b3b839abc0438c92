"""Shared test plumbing: the fixture manifest, built once per session."""

from __future__ import annotations

from functools import cache
from typing import Any

from tests.fixtures.build import build_all


@cache
def fixture_entries() -> tuple[dict[str, Any], ...]:
    """Every fixture of every recipe, with the oracle's answers."""
    return tuple(build_all())


def fixture_ids(entries: tuple[dict[str, Any], ...]) -> list[str]:
    return [f"{e['recipe']}/{e['name']}" for e in entries]
