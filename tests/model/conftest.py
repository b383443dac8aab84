"""Fixtures and markers for the pvit tests."""

from __future__ import annotations

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")


@pytest.fixture
def video() -> torch.Tensor:
    return torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(1))
