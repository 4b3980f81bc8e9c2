"""The examples a user reads run as written: the README's Python blocks and the user guide's.

Each page's blocks run in order in one namespace, against the installed package,
from a temporary directory. A block that imports an optional peer (torch, onnx,
onnxruntime) is skipped with its page when the peer is not installed. The
README and the guide are beside the tests in a source tree, not in a copied
test tree (the wheel check), where these tests skip.
"""

from __future__ import annotations

import importlib.util
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE = sorted((ROOT / "docs" / "guide").glob("*.rst")) + [ROOT / "docs" / "index.rst"]
OPTIONAL = ("torch", "onnx", "onnxruntime", "dask", "distributed")


SKIP_MARK = "<!-- not run by tests/test_docs.py"


def readme_blocks(text: str) -> list[str]:
    """The README's Python blocks, but those marked as not runnable (they need data of the reader's)."""
    blocks = []
    for match in re.finditer(r"(<!--[^\n]*-->\n)?```python\n(.*?)```", text, re.S):
        if not (match.group(1) or "").startswith(SKIP_MARK):
            blocks.append(match.group(2))
    return blocks


def rst_blocks(text: str) -> list[str]:
    """The bodies of ``.. code-block:: python`` directives (their indented lines)."""
    blocks = []
    for match in re.finditer(
        r"^( *)\.\. code-block:: python\n((?:\1 +:.*\n)*)\n((?:\1 +.*\n|\s*\n)+)", text, re.M
    ):
        blocks.append(textwrap.dedent(match.group(3)))
    return blocks


def run_blocks(blocks: list[str], source: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    missing = [name for name in OPTIONAL if importlib.util.find_spec(name) is None]
    for block in blocks:
        for name in missing:
            if re.search(rf"^\s*(import|from) {name}\b", block, re.M):
                pytest.skip(f"{source.name} uses {name}, which is not installed")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks:
        exec(compile(block, str(source), "exec"), namespace)
    return namespace


@pytest.mark.skipif(not README.exists(), reason="the README is not beside the tests (a copied test tree)")
def test_readme_examples_run(monkeypatch, tmp_path, capsys):
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2
    namespace = run_blocks(blocks, README, monkeypatch, tmp_path)
    # The stock example's comment states its predictions.
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "[0.01 0.97]"
    # The training loop prints its loss, and the loss falls.
    losses = [float(v) for v in re.findall(r"mean squared error ([0-9.]+)", out)]
    assert len(losses) >= 2 and losses[-1] < losses[0] / 2
    assert namespace["m"].grads


@pytest.mark.skipif(not GUIDE[:-1], reason="the user guide is not beside the tests (a copied test tree)")
@pytest.mark.parametrize("page", GUIDE, ids=lambda p: p.stem)
def test_guide_examples_run(page, monkeypatch, tmp_path):
    blocks = rst_blocks(page.read_text(encoding="utf-8"))
    if not blocks:
        pytest.skip(f"{page.name} has no Python examples")
    run_blocks(blocks, page, monkeypatch, tmp_path)
