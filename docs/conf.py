"""Sphinx configuration of jlvm's documentation site.

Build it from the repository's root with ``pip install -e '.[docs]'`` and
``sphinx-build -W -b html docs docs/_build/html``. The notebooks are rendered with the
outputs stored in them (the test suite executes them; the build never runs them again).
"""

import pathlib
import shutil
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

project = "jlvm"
author = "the jlvm developers"
copyright = "2026, the jlvm developers"

extensions = [
    "myst_nb",                      # Markdown pages (MyST) and the notebooks, not executed
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",          # the docstrings' "Args:" / "Returns:" sections
    "sphinx.ext.mathjax",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build"]
nb_execution_mode = "off"           # stored outputs only
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

autosummary_generate = True
autosummary_ignore_module_all = False   # a module's tables list its __all__, re-exports too
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True          # Attributes: as a field list (autodoc documents the fields)

html_theme = "pydata_sphinx_theme"
html_title = "jlvm"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
suppress_warnings = ["mystnb.unknown_mime_type"]


def _copy_notebooks() -> None:
    """The notebooks as the tutorials: copied from notebooks/ into docs/tutorials/ (a build
    folder git ignores), so that the site renders the files the tests execute."""
    target = HERE / "tutorials"
    target.mkdir(exist_ok=True)
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copyfile(notebook, target / notebook.name)


def _command_line_page() -> None:
    """docs/command-line.md (a build file git ignores): ``jlvm --help`` and every
    subcommand's ``--help``, printed by the command's own parser, so the page cannot drift
    from the command."""
    import argparse
    import os

    os.environ["COLUMNS"] = "100"  # argparse wraps its help to this width
    from jlvm import cli

    parser = cli._parser()
    parser.prog = "jlvm"
    sections = ["# The command line", "",
                "Every subcommand and option of `jlvm`, as `jlvm COMMAND --help` prints them "
                "(this page is generated from the command's parser when the site is built).",
                "", "```text", parser.format_help().rstrip(), "```"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                sections += ["", f"## `jlvm {name}`", "", "```text",
                             subparser.format_help().rstrip(), "```"]
    (HERE / "command-line.md").write_text("\n".join(sections) + "\n")


_copy_notebooks()
_command_line_page()


def _skip_field_aliases(app, what, name, obj, skip, options):
    """A NamedTuple's fields are documented in its ``Attributes:`` section (test_docs.py
    checks that each is): their properties, whose only text is Python's "Alias for field
    number N", are left out rather than listed a second time."""
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_field_aliases)
