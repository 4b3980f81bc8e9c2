"""The README's Python examples run, in order, against the installed package."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SKIP_MARK = "<!-- not run by tests/test_readme.py"


def python_blocks():
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"(<!--[^\n]*-->\n)?```python\n(.*?)```", text, re.S):
        if not (match.group(1) or "").startswith(SKIP_MARK):
            blocks.append(match.group(2))
    return blocks


@pytest.mark.skipif(not README.exists(), reason="the README is not beside the tests (a copied test tree)")
def test_readme_examples_run():
    blocks = python_blocks()
    assert len(blocks) >= 5
    namespace: dict = {}
    for k, block in enumerate(blocks):
        exec(compile(block, str(README), "exec"), namespace)
        if k == 0:
            # The stock example's comment states its predictions.
            assert namespace["y"][-1, :, 0].round(2).tolist() == [0.01, 0.97]
