"""Fuzz profiles: quick on every pull request, thorough in a nightly-sized run (VOXWS_FUZZ=nightly).

The nightly profile multiplies every fuzzer's example count by NIGHTLY_FACTOR."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

NIGHTLY_FACTOR = 10
NIGHTLY = os.environ.get("VOXWS_FUZZ", "").lower() == "nightly"


def examples(n: int) -> int:
    """n examples on a pull request, NIGHTLY_FACTOR x n in the nightly profile."""
    return n * NIGHTLY_FACTOR if NIGHTLY else n


def fuzz(n: int) -> settings:
    return settings(max_examples=examples(n), deadline=None, database=None, suppress_health_check=list(HealthCheck))
