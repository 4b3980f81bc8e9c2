"""Sphinx configuration for the lstm_c documentation.

Build from the repository root, with lstm_c installed (its compiled module is
needed to import the package):

    sphinx-build -W --keep-going -b html docs docs/_build/html

The build needs no network: no intersphinx inventories are fetched.
"""

from importlib.metadata import version as _installed_version

# -- Project ------------------------------------------------------------------

project = "lstm_c"
author = "the lstm_c developers"
copyright = "the lstm_c developers"
release = _installed_version("lstm_c")  # the installed package's metadata, set in pyproject.toml
version = ".".join(release.split(".")[:2])

# -- General ------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "numpydoc",
]

# Offline builds: CI has no internet, so no inventories are configured.
intersphinx_mapping = {}

exclude_patterns = ["_build"]
templates_path = []

# `name` in docstrings and pages links to the Python object of that name when
# there is one (lstm_c.lstm_forward, ...) and is shown as code otherwise.
default_role = "py:obj"

# -- autodoc / autosummary ----------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc sections give types and shapes
autodoc_preserve_defaults = True  # show defaults as written (np.float32), not their repr
# autosummary tables in the pages only list objects; every page is written by hand.
autosummary_generate = False

# -- numpydoc -----------------------------------------------------------------

# The API pages list members explicitly (autoclass :members:); numpydoc's own
# member tables would document them twice.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- HTML ---------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"lstm_c {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_show_sourcelink = False
