"""The installed package: type information, OpenMP where required, one version everywhere."""

import ast
import inspect
import os
import re
from importlib.metadata import version
from pathlib import Path

import pytest

import lstm_c
from lstm_c import _lstm

PACKAGE = Path(lstm_c.__file__).parent
# The source tree, when the tests run from it (cibuildwheel and .ci/run may copy them away).
SOURCE_TREE = Path(__file__).resolve().parents[1]


def test_package_is_typed():
    assert (PACKAGE / "py.typed").is_file()


def _stub_functions() -> dict[str, ast.FunctionDef]:
    stub = PACKAGE / "_lstm.pyi"
    assert stub.is_file(), f"no stubs for the compiled module next to it in {PACKAGE}"
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_stubs_cover_exactly_the_compiled_modules_functions():
    public = {
        name
        for name, value in vars(_lstm).items()
        if not name.startswith("_") and callable(value) and not inspect.isclass(value)
    }
    assert set(_stub_functions()) == public


@pytest.mark.parametrize("name, expected", [("openmp_enabled", bool), ("omp_max_threads", int)])
def test_stub_return_types_match_the_runtime(name, expected):
    returns = _stub_functions()[name].returns
    assert isinstance(returns, ast.Name) and returns.id == expected.__name__
    assert type(getattr(_lstm, name)()) is expected


def test_openmp_threads_are_at_least_one():
    assert _lstm.omp_max_threads() >= 1
    if not lstm_c.openmp_enabled():
        assert _lstm.omp_max_threads() == 1


@pytest.mark.skipif(
    os.environ.get("LSTM_C_REQUIRE_OPENMP") != "1",
    reason="set LSTM_C_REQUIRE_OPENMP=1 to require an OpenMP build (wheel CI does)",
)
def test_built_with_openmp_where_required():
    assert lstm_c.openmp_enabled(), "this build of lstm_c has no OpenMP: its kernels run on one thread"


def test_version_comes_from_the_installed_metadata():
    assert lstm_c.__version__ == version("lstm_c")
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?(a|b|rc|dev|post)\d+)*", lstm_c.__version__)


def _source_file(name: str) -> Path:
    path = SOURCE_TREE / name
    if not path.is_file():
        pytest.skip(f"{name} is not beside the tests (they run outside the source tree)")
    return path


def test_pyproject_holds_the_installed_version():
    # The version lives in pyproject.toml only; a mismatch means a stale install.
    text = _source_file("pyproject.toml").read_text(encoding="utf-8")
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    declared = re.search(r'^version\s*=\s*"([^"]+)"', project, re.MULTILINE)
    assert declared, "no static version in pyproject.toml's [project] table"
    assert declared.group(1) == lstm_c.__version__


def test_changelog_has_a_section_for_this_version():
    text = _source_file("CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## \[{re.escape(lstm_c.__version__)}\]", text, re.MULTILINE), (
        f"CHANGELOG.md has no '## [{lstm_c.__version__}]' section"
    )
