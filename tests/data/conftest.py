"""Shared fixtures of the data tests: a tiny synthetic dataset and hand-written DAIR roots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from revqom_nodes.data.synthetic import generate_dataset
from tests.data.dair_fixtures import TINY, TINY_FRAMES, TINY_SCENES, TINY_SEED, build_dair


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-frame, 2-scene synthetic DAIR-V2X-C root (read-only for the tests)."""
    root = tmp_path_factory.mktemp("synthetic") / "dair"
    generate_dataset(root, TINY_FRAMES, TINY_SEED, scenes=TINY_SCENES, config=TINY, progress=False)
    return root


@pytest.fixture
def make_dair(tmp_path: Path) -> Callable[..., Path]:
    """Builder of a one-frame hand-written DAIR-V2X-C root: ``make_dair(**variations) -> root``."""

    def build(**variations: object) -> Path:
        return build_dair(tmp_path / "dair", **variations)  # type: ignore[arg-type]

    return build
