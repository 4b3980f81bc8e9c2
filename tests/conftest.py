"""Test-suite configuration: the markers, registered here (pyproject.toml holds no pytest
markers), and the fixtures every module may use. Shared functions live in helpers.py.

- ``slow``: takes seconds rather than milliseconds (long sequences, thousands of calls).
  Runs by default; ``pytest -m "not slow"`` leaves these out.
- ``sanitizer``: builds the extension with AddressSanitizer and Cython bounds
  checks and runs the kernel tests against that build (tests/sanitize/run_asan.sh,
  minutes). Skipped unless the environment has ``LSTM_C_RUN_SANITIZER=1``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from lstm_c import _lstm

# The test modules import helpers.py beside them, however pytest was started (from the
# repository root, or on a copy of tests/ with another configuration, as the wheel check does).
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: seconds rather than milliseconds (long sequences, many calls); runs by default"
    )
    config.addinivalue_line(
        "markers",
        "sanitizer: builds and tests the kernels under AddressSanitizer; "
        "runs only with LSTM_C_RUN_SANITIZER=1",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("LSTM_C_RUN_SANITIZER", "0") not in ("", "0"):
        return
    skip = pytest.mark.skip(
        reason="set LSTM_C_RUN_SANITIZER=1 to build and test the kernels under AddressSanitizer"
    )
    for item in items:
        if "sanitizer" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def kernels(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the compiled kernels called during the test, in order."""
    calls: list[str] = []
    for name in ("forward", "backward", "step"):
        original = getattr(_lstm, name, None)
        if original is None:
            continue

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(_lstm, name, spy)
    return calls
