"""The documentation site (docs/, built by ``sphinx-build -W -b html docs docs/_build/html``
with ``pip install -e '.[docs]'``; .ci/run builds it before the tests): every public name
has an entry in its inventory. Without a build the test is skipped and says how to build."""

import importlib
import inspect
import pathlib
import re

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


def _sections(doc: str) -> dict[str, list[str]]:
    """A Google-style docstring's sections (``Args:``, ``Returns:``, ...): their lines."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in doc.splitlines():
        header = line and not line[0].isspace() and line.rstrip().endswith(":")
        if header and " " not in line.strip():
            current = sections.setdefault(line.strip()[:-1], [])
        elif current is not None and line and not line[0].isspace():
            current = None                      # an unindented paragraph ends the section
        elif current is not None:
            current.append(line)
    return sections


LITERALS = re.compile(r"``.+?``|:\w+:`.+?`")   # where napoleon looks for no colon
ENUMERATOR = re.compile(r"^\(?([A-Za-z]|\d+|[ivxlcdm]+)[.)](\s|$)")


def docstring_problems(function) -> list[str]:
    """What the reference entry of ``function`` lacks in optax's form: an ``Args:`` line for
    every parameter (``name: ...``, or ``a, b: ...`` for several) and a ``Returns:`` (or
    ``Yields:``) section unless it is annotated ``-> None``."""
    doc = inspect.getdoc(function) or ""
    if not doc:
        return ["no docstring"]
    sections = _sections(doc)
    signature = inspect.signature(function)
    problems = []
    documented = {name.strip().lstrip("*").split(" (")[0]   # "key, q: as in elbo" counts both
                  for line in sections.get("Args", []) if ":" in line
                  for name in line.split(":")[0].split(",")}
    for name in signature.parameters:
        if name not in documented:
            problems.append(f"no Args line for {name!r}")
    returns_none = signature.return_annotation in (None, "None")
    if not returns_none and not ({"Returns", "Yields"} & set(sections)):
        problems.append("no Returns section")
    result = [line for name in ("Returns", "Yields") for line in sections.get(name, []) if line]
    if result and ":" in LITERALS.sub("", result[0]).replace("::", ""):
        # napoleon reads the text before such a colon as the return type, in place of the
        # annotation ("Return type: What jlvm train prints")
        problems.append(f"a colon in the first line of Returns: {result[0].strip()!r}")
    for line in sections.get("Args", []):
        description = line.partition(":")[2].strip()
        if ENUMERATOR.match(description):  # reStructuredText reads "L." as a list's label
            problems.append(f"an Args description that reads as a list item: {line.strip()!r}")
    return problems


def field_problems(cls) -> list[str]:
    """What a public NamedTuple's entry lacks: an ``Attributes:`` line for every field."""
    sections = _sections(inspect.getdoc(cls) or "")
    documented = {name.strip().split(" (")[0] for line in sections.get("Attributes", [])
                  if ":" in line for name in line.split(":")[0].split(",")}
    return [f"no Attributes line for {field!r}" for field in cls._fields
            if field not in documented]


def public_namedtuples() -> dict[str, type]:
    """Every public NamedTuple class the reference documents, each once."""
    classes: dict[str, type] = {}
    for owner in ("jlvm", *MODULES):
        module = importlib.import_module(owner)
        for name in jlvm.__all__ if owner == "jlvm" else public_names(module):
            value = getattr(module, name)
            if inspect.isclass(value) and hasattr(value, "_fields"):
                classes.setdefault(f"{value.__module__}.{value.__qualname__}", value)
    return classes


def public_functions() -> dict[str, object]:
    """Every public function the reference documents (each once, under the first name it
    has in ``jlvm`` and MODULES)."""
    functions: dict[str, object] = {}
    seen = set()
    for owner in ("jlvm", *MODULES):
        module = importlib.import_module(owner)
        names = jlvm.__all__ if owner == "jlvm" else public_names(module)
        for name in names:
            value = getattr(module, name)
            if inspect.isfunction(value) and id(value) not in seen:
                seen.add(id(value))
                functions[f"{owner}.{name}"] = value
    return functions


def test_every_public_function_documents_its_arguments_and_result():
    problems = {name: found for name, function in public_functions().items()
                if (found := docstring_problems(function))}
    assert not problems, "\n".join(f"{name}: {', '.join(found)}"
                                   for name, found in sorted(problems.items()))


def test_every_public_namedtuple_documents_its_fields():
    problems = {name: found for name, cls in public_namedtuples().items()
                if (found := field_problems(cls))}
    assert not problems, "\n".join(f"{name}: {', '.join(found)}"
                                   for name, found in sorted(problems.items()))


if __name__ == "__main__":  # python tests/test_docs.py [MODULE-PREFIX]: what is left to write
    import sys

    prefix = sys.argv[1] if len(sys.argv) > 1 else ""
    for function in public_functions().values():
        found = docstring_problems(function)
        if found and f"{function.__module__}.{function.__name__}".startswith(prefix):
            print(f"{function.__module__}.{function.__name__}: {', '.join(found)}")
    for name, cls in public_namedtuples().items():
        if (found := field_problems(cls)) and name.startswith(prefix):
            print(f"{name}: {', '.join(found)}")
