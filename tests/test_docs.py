"""The documentation site (docs/, built by ``sphinx-build -W -b html docs docs/_build/html``
with ``pip install -e '.[docs]'``; .ci/run builds it before the tests): every public name
has an entry in its inventory. Without a build the test is skipped and says how to build."""

import importlib
import inspect
import pathlib

import pytest

import jlvm

INVENTORY = pathlib.Path(__file__).resolve().parents[1] / "docs" / "_build" / "html" / "objects.inv"
# the modules whose public functions and classes the reference must hold (issue 25)
MODULES = ("jlvm.estimators", "jlvm.gradients", "jlvm.diagnostics", "jlvm.ais", "jlvm.evaluate",
           "jlvm.missing", "jlvm.train", "jlvm.inference", "jlvm.runs", "jlvm.checkpoint",
           "jlvm.plots", "jlvm.data", "jlvm.models.vae", "jlvm.models.gmm",
           "jlvm.models.bernoulli_mixture", "jlvm.models.linear_gaussian",
           "jlvm.models.autoregressive", "jlvm.models.posteriors", "jlvm.models.priors",
           "jlvm.models.likelihoods", "jlvm.models.flows", "jlvm.models.networks",
           "jlvm.models.protocol")


def public_names(module) -> list[str]:
    """A module's public functions and classes: its ``__all__``, else those it defines
    whose names do not start with an underscore."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name, value in vars(module).items() if not name.startswith("_")
                 and (inspect.isfunction(value) or inspect.isclass(value))
                 and getattr(value, "__module__", None) == module.__name__]
    return sorted(names)


def _inventory() -> set[str]:
    if not INVENTORY.is_file():
        pytest.skip("the docs are not built: pip install -e '.[docs]' && sphinx-build -W -b "
                    "html docs docs/_build/html")
    from sphinx.util.inventory import InventoryFile

    with INVENTORY.open("rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    return {name for entries in inventory.values() for name in entries}


def _documented_as(owner: str, name: str, value) -> set[str]:
    """The names under which ``value`` (``owner.name``) may stand in the inventory: where
    it is re-exported, and where it is defined."""
    names = {f"{owner}.{name}"}
    if inspect.ismodule(value):
        names.add(value.__name__)
    elif getattr(value, "__module__", None):
        names.add(f"{value.__module__}.{getattr(value, '__qualname__', name)}")
    return names


def test_every_public_name_has_a_reference_entry():
    documented = _inventory()
    missing = []
    for owner in ("jlvm", *MODULES):
        module = importlib.import_module(owner)
        names = jlvm.__all__ if owner == "jlvm" else public_names(module)
        for name in names:
            if not _documented_as(owner, name, getattr(module, name)) & documented:
                missing.append(f"{owner}.{name}")
    assert not missing, f"no reference entry for {missing}"
