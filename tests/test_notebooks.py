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
# does, in every cell (None) or in the cells given by their index in the notebook: their
# programs are many and short, so compiling dominates. Measured cell by cell on the 2-core
# machine, the kernel on one core, 2026-12-05 (usual -> cheaper compilation): 06 every
# cell (35 -> 32 s); 04's cell 6 43 -> 22 s (cells 1 and 3 14 -> 16 s, 13 -> 25 s: kept
# usual); 02's cells 5 and 8 12.0 -> 4.2 s, 2.9 -> 1.1 s (cell 10 14 -> 16 s); 05's cell 11
# 16.0 -> 5.9 s (cells 1-7 54 -> 191 s); 07's cell 7 13.0 -> 11.4 s (cell 3 42 -> 234 s);
# 01's cells 3-7 4.9 -> 3.1 s; 03's cell 5 2.2 -> 1.3 s (cell 1 15 -> 21 s). 08 none (its
# BDMC cell 36 -> 46 s). 09's cells 9 and 11 26 -> 14 s, 35 -> 13 s (cell 3 38 -> 41 s).
CHEAP_COMPILATION = {"06_your_own_model.ipynb": None,
                     "04_svi_vs_amortized.ipynb": {6},
                     "02_estimating_marginal_likelihood.ipynb": {1, 3, 5, 6, 8},
                     "05_missing_data.ipynb": {11},
                     "07_learning_with_missing_data.ipynb": {7},
                     "01_mixture_models.ipynb": {3, 5, 7},
                     "03_vae.ipynb": {5},
                     "09_discrete_latents.ipynb": {9, 11}}


def _compile_cheaply(notebook, cells) -> None:
    """Around each of ``cells`` (indices in the notebook as stored), a cell of the test's
    own that turns most of XLA's optimizations off and one that turns them on again."""
    def switch(value):
        return nbformat.v4.new_code_cell(
            f"import jax; jax.config.update('jax_disable_most_optimizations', {value})")

    for index in sorted(cells, reverse=True):
        notebook.cells[index + 1:index + 1] = [switch(False)]
        notebook.cells[index:index] = [switch(True)]


def _execute(path: pathlib.Path) -> None:
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    cheap = CHEAP_COMPILATION.get(path.name, set())
    if cheap is not None:
        _compile_cheaply(notebook, cheap)
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
        if cheap is None:
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
