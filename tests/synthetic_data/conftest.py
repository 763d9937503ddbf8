"""Generated deliveries shared by the synthetic_data tests (each in its own temporary data home)."""

from __future__ import annotations

import pytest
from synth_helpers import Delivery

from hdp.settings import Settings
from synthetic_data.generate import generate


def _settings(home) -> Settings:
    return Settings(home=home, environment="development", governance_url=f"sqlite:///{home / 'gov.sqlite'}")


@pytest.fixture(scope="session")
def defective(tmp_path_factory):
    """A delivery with every defect class (600 persons, 2 % defects)."""
    settings = _settings(tmp_path_factory.mktemp("defective"))
    summary = generate(settings, seed=11, persons=600, defect_rate=0.02)
    return Delivery(settings), summary


@pytest.fixture(scope="session")
def clean(tmp_path_factory):
    """A delivery without defects (300 persons)."""
    settings = _settings(tmp_path_factory.mktemp("clean"))
    summary = generate(settings, seed=5, persons=300, defect_rate=0.0)
    return Delivery(settings), summary
