"""What is left of the former catch-all hardening module: its command-line section, which
moves to test_cli.py. Everything else it held now lives with the module it tests
(test_validation.py, test_validation_layer.py, test_blas_guard.py, test_functional.py,
test_numerics.py, test_layer_edges.py, test_interop.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize("args", [("--nonsense",), ("INFO",), ("demo", "--json"), ("info", "--json", "extra"),
                                  ("info", "--json=yes")])
def test_cli_usage_errors_exit_2(tmp_path, args):
    result = subprocess.run([sys.executable, "-m", "lstm_c", *args], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "usage: python -m lstm_c" in result.stderr and "error:" in result.stderr
    assert result.stdout == ""
