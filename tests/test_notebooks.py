"""Every notebook in notebooks/ runs top to bottom (a fresh kernel, outputs not saved).

The notebooks run in their own kernels, one at a time, from the moment the session's tests
are collected (``conftest.pytest_collection_finish``), beside the other tests: the kernel
on one core (the background runner's, tests/background.py, which conftest leaves free),
this process on the other. Each test below waits for its notebook's outcome; conftest runs
them after every other test of this process (then the tests that start two processes, to
bound memory)."""

import os
import pathlib
import tempfile

import background
import nbformat
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
# notebooks whose kernels compile with most of XLA's optimizations off, as this process
# does: their programs are many and short, so compiling dominates (measured on the 2-core
# machine, 2026-12-05: 04 65 -> 55 s, 06 53 -> 41 s; 03 30 -> 34 s and 05 72 -> 242 s
# the other way: their long computations repay the optimizations)
CHEAP_COMPILATION = {"04_svi_vs_amortized.ipynb", "06_your_own_model.ipynb"}


def _execute(path: pathlib.Path) -> None:
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    cpu = background.kernel_cpu()
    if cpu is not None:  # the kernel on the core conftest left free, before JAX starts
        notebook.cells.insert(0, nbformat.v4.new_code_cell(
            f"import os; os.sched_setaffinity(0, {{{int(cpu)}}})"))
    with tempfile.TemporaryDirectory(prefix=f"jlvm-{path.stem}-") as folder:
        client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                                resources={"metadata": {"path": folder}})
        # the kernel compiles with XLA's usual optimizations, not conftest's cheaper setting
        # for the tests' own short programs: several cells run long enough to repay them
        env = {name: value for name, value in os.environ.items()
               if name != "JAX_DISABLE_MOST_OPTIMIZATIONS"}
        if path.name in CHEAP_COMPILATION:
            env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
        client.execute(env=env)  # raises CellExecutionError, with the cell and traceback


def start(paths) -> None:
    """Queues the notebooks ``paths`` (each once) on the background runner."""
    for path in paths:
        background.start(path, lambda path=path: _execute(path))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path):
    start([path])  # already queued when the session started, unless run on its own
    background.STARTED[path].result()  # its CellExecutionError, if a cell failed
