"""A model of your own: ``FILE.py:FACTORY`` or ``package.module:FACTORY``.

``FACTORY(data_dim, **model_args)`` returns a ``jlvm.Model``. The spec is stored with the
file's absolute path, so that ``evaluate``, ``encode``, ``impute``, ``sample`` and
``--resume`` import the factory again in a new process, from any directory; the file's
SHA-256 is recorded, and a file changed since is a one-line warning (parameters that no
longer fit are then an error when the checkpoint is read).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import keyword
import os
import pathlib
import sys
from typing import Any

from jlvm.runs._errors import RunError


def is_spec(model: str) -> bool:
    """Whether ``model`` is ``SOMETHING:FACTORY`` (a model of your own), not a kind name."""
    head, colon, factory = model.rpartition(":")
    return bool(colon and head and factory)


def _parts(spec: str) -> tuple[str, str, bool]:
    """(file path or module name, factory name, whether it is a file)."""
    head, _, factory = spec.rpartition(":")
    if not factory.isidentifier() or keyword.iskeyword(factory):
        raise RunError(f"--model {spec}: {factory!r} after the colon must be the name of the "
                       "factory function (FILE.py:FACTORY or package.module:FACTORY).")
    if head.endswith(".py") or os.sep in head or "/" in head:
        return head, factory, True
    if not all(part.isidentifier() for part in head.split(".")):
        raise RunError(f"--model {spec}: {head!r} is neither a .py file nor a module name "
                       "(package.module).")
    return head, factory, False


def absolute(spec: str, base: pathlib.Path) -> str:
    """The spec with a relative FILE.py made absolute against ``base``."""
    head, factory, is_file = _parts(spec)
    if not is_file:
        return spec
    return f"{base / head}:{factory}"


def parse_arguments(pairs: list[str]) -> dict[str, Any]:
    """``--model-arg NAME=VALUE`` pairs as keyword arguments: VALUE parsed as JSON where it
    parses (numbers, true/false, lists, objects, quoted strings), else kept as a string."""
    arguments: dict[str, Any] = {}
    for pair in pairs:
        name, equals, text = pair.partition("=")
        name = name.strip()
        if not equals or not name.isidentifier() or keyword.iskeyword(name):
            raise RunError(f"--model-arg must be NAME=VALUE with NAME a Python identifier, "
                           f"got {pair!r}.")
        if name in arguments:
            raise RunError(f"--model-arg {name} is given twice.")
        try:
            arguments[name] = json.loads(text)
        except ValueError:
            arguments[name] = text
    return arguments


def check_arguments(model_args: Any) -> None:
    """The factory's keyword arguments must be JSON values under identifier names, none
    called ``data_dim`` (jlvm passes it)."""
    for name, value in model_args.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise RunError(f"--model-arg names must be Python identifiers, got {name!r}.")
        if name == "data_dim":
            raise RunError("--model-arg data_dim: jlvm passes data_dim (the data's D) "
                           "itself.")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise RunError(f"--model-arg {name} must be a JSON value (a number, string, "
                           f"bool, list or dict), got {value!r}.") from None


def _hash(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _import_file(path: pathlib.Path):
    """The module of a .py file, run under a name of its own; its folder is on sys.path
    meanwhile, so that it can import the modules beside it."""
    name = f"jlvm_user_model_{hashlib.sha256(str(path).encode()).hexdigest()[:16]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # what dataclasses and pickling look up
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(str(path.parent))
    return module


def load(spec: str, stored: dict | None = None, warn=None) -> tuple[Any, dict]:
    """(FACTORY, facts to record: the file and its SHA-256). ``stored``: the facts recorded
    at training; a file that changed since is a warning (``warn``)."""
    head, factory_name, is_file = _parts(spec)
    try:
        if is_file:
            path = pathlib.Path(head)
            if not path.is_file():
                raise RunError(f"--model {spec}: {path} does not exist"
                               f"{' (any more)' if stored else ''}.")
            module = _import_file(path)
        else:
            root = (stored or {}).get("root")
            added = root is not None and root not in sys.path
            if added:
                sys.path.append(root)
            elif not stored:  # a new run: as `python -m` would, from the current folder
                sys.path.insert(0, os.getcwd())
            try:
                module = importlib.import_module(head)
            finally:
                if added:
                    sys.path.remove(root)
                elif not stored:
                    sys.path.remove(os.getcwd())
            path = pathlib.Path(getattr(module, "__file__", "") or "")
    except RunError:
        raise
    except ModuleNotFoundError as error:
        raise RunError(f"--model {spec}: cannot import {head} ({error}); is it installed, or "
                       "on PYTHONPATH?") from None
    except BaseException as error:  # the user's module: whatever it raises, say where
        if isinstance(error, KeyboardInterrupt):
            raise
        raise RunError(f"--model {spec}: importing {head} raised {type(error).__name__}: "
                       f"{_one_line(error)}") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        defined = sorted(name for name, value in vars(module).items()
                         if callable(value) and not name.startswith("_")
                         and getattr(value, "__module__", None) == module.__name__)
        raise RunError(f"--model {spec}: {head} defines no function {factory_name} (it "
                       f"defines {', '.join(defined) or 'none'}).")
    facts = {}
    if path.is_file():
        facts = {"path": str(path.resolve()), "sha256": _hash(path)}
        if not is_file:
            depth = head.count(".") + (path.name == "__init__.py")
            facts["root"] = str(path.resolve().parents[depth])
    if stored and stored.get("sha256") and facts.get("sha256") != stored["sha256"] \
            and warn is not None:
        warn(f"{facts.get('path', head)} has changed since the run was trained (its SHA-256 "
             "differs); its model is built from the file as it is now.")
    return factory, facts


def build(spec: str, data_dim: int, model_args: dict, stored: dict | None = None,
          warn=None) -> tuple[Any, dict]:
    """(the ``jlvm.Model`` that ``FACTORY(data_dim, **model_args)`` returns, facts)."""
    from jlvm.models.protocol import Model

    factory, facts = load(spec, stored, warn)
    call = f"{spec.rpartition(':')[2]}(data_dim={data_dim}" + "".join(
        f", {name}={value!r}" for name, value in model_args.items()) + ")"
    try:
        model = factory(data_dim, **model_args)
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            raise
        raise RunError(f"--model {spec}: {call} raised {type(error).__name__}: "
                       f"{_one_line(error)}") from None
    if not isinstance(model, Model):
        raise RunError(f"--model {spec}: {call} must return a jlvm.Model(init, log_joint, "
                       f"encoder, ...), got {type(model).__name__}.")
    if not callable(model.encoder):
        raise RunError(f"--model {spec}: {call} returned a model without an encoder; jlvm "
                       "train fits your model with the amortized learner, which needs "
                       "model.encoder(params, x, mask=None) -> a distrax q(z | x).")
    return model, facts


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
