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
# does, in every cell (None) or in the cells given by their index in the notebook as stored:
# their programs are many and short, so compiling dominates. Measured cell by cell on the
# 2-core machine, the kernel on one core, 2026-12-05 (usual -> cheaper compilation; the
# indices as they are now, after 04, 05, 07, 09, 02, 03 and 06 gained a parameters cell at
# index 1): 06 every cell (35 -> 32 s); 04's cell 7 43 -> 22 s (cells 2 and 4 14 -> 16 s,
# 13 -> 25 s: kept usual); 05's cell 12 16.0 -> 5.9 s (cells 2-8 54 -> 191 s); 07's cell 8
# 13.0 -> 11.4 s (cell 4 42 -> 234 s); 01's cells 3-7 4.9 -> 3.1 s. 08 none (its BDMC cell
# 36 -> 46 s). 09's cells 10 and 12 26 -> 14 s, 35 -> 13 s (cell 4 38 -> 41 s). 02 and 03
# every cell, now that the tests run them at their SMALLER sizes (2026-12-06, the cells'
# total at those sizes: 02 19.7 s with cells 2, 4, 6, 7 and 9 cheaper -> 16.3 s, its cell
# 11 7.4 -> 4.0 s; 03 19.1 s with cell 6 cheaper -> 13.7 s, its cell 2 8.4 -> 6.2 s; at
# their full sizes cheaper compilation cost 02's cell 11 14 -> 16 s, 03's cell 2 15 -> 21 s).
CHEAP_COMPILATION = {"06_your_own_model.ipynb": None,
                     "04_svi_vs_amortized.ipynb": {7},
                     "02_estimating_marginal_likelihood.ipynb": None,
                     "05_missing_data.ipynb": {12},
                     "07_learning_with_missing_data.ipynb": {8},
                     "01_mixture_models.ipynb": {3, 5, 7},
                     "03_vae.ipynb": None,
                     "09_discrete_latents.ipynb": {10, 12}}
# The sizes a notebook's code cell tagged "parameters" (papermill's convention) sets: its
# epochs, draws and temperatures. The tests run the notebook with the smaller sizes below,
# assigned in a cell of their own right after that one: every cell still runs top to
# bottom, the same code on data of the same shapes, in less time (what is left is mostly
# compiling). The outputs stored in the notebooks come from the sizes as written there.
# Measured on the 2-core machine, the kernel on one core (the other busy), 2026-12-06: 04
# 60 -> 35 s, 05 99 -> 73 s, 07 126 -> 70 s, 08 88 -> 56 s, 09 59 -> 39 s; and (the three
# on their own, -k, the other core nearly idle; 02 and 03 now compiled cheaply in every
# cell) 02 30 -> 11 s, 03 31 -> 10 s, 06 38 -> 18 s.
SMALLER = {
    "04_svi_vs_amortized.ipynb": {"VAE_EPOCHS": 10, "LEARNER_EPOCHS": 3},
    "05_missing_data.ipynb": {"NADE_STEPS": 200, "SVI_STEPS": 30, "REPEATS": 2,
                              "REFERENCE_SAMPLES": 2000, "GRADIENT_DRAWS": 50},
    "07_learning_with_missing_data.ipynb": {"SVI_EPOCHS": 1, "DEEP_EPOCHS": 5,
                                            "IMPUTER_ITERATIONS": 2},
    "08_how_good_is_my_log_likelihood.ipynb": {"EPOCHS": 5, "IS_SAMPLES": 500,
                                               "AIS_STEPS": 30, "BDMC_STEPS": (3, 10)},
    "09_discrete_latents.ipynb": {"BITS": (10, 12), "EPOCHS": 5, "GRADIENT_DRAWS": 20},
    "02_estimating_marginal_likelihood.ipynb": {"REPEATS": 2, "JENSEN_REPEATS": 10,
                                                "MIXTURE_REPEATS": 2},
    "03_vae.ipynb": {"EPOCHS": 2, "ELBO_DRAWS": 2, "IS_DRAWS": 2, "LECTURE_DRAWS": 2},
    "06_your_own_model.ipynb": {"EPOCHS": 1, "CONV_EPOCHS": 1, "IS_DRAWS": 2},
}


def _compile_cheaply(notebook, cells) -> None:
    """Around each of ``cells`` (indices in the notebook as stored), a cell of the test's
    own that turns most of XLA's optimizations off and one that turns them on again."""
    def switch(value):
        return nbformat.v4.new_code_cell(
            f"import jax; jax.config.update('jax_disable_most_optimizations', {value})")

    for index in sorted(cells, reverse=True):
        notebook.cells[index + 1:index + 1] = [switch(False)]
        notebook.cells[index:index] = [switch(True)]


def _parameters(notebook) -> tuple[int, set[str]]:
    """The index of the notebook's cell tagged "parameters" and the names it assigns."""
    import ast

    tagged = [index for index, cell in enumerate(notebook.cells)
              if "parameters" in cell.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise AssertionError(f"expected one cell tagged 'parameters', found {len(tagged)}")
    tree = ast.parse(notebook.cells[tagged[0]].source)
    return tagged[0], {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                       for target in node.targets if isinstance(target, ast.Name)}


def _smaller(notebook, sizes: dict) -> None:
    """After the notebook's parameters cell, a cell of the test's own assigning ``sizes``
    (each a name that cell assigns: an override of a name the notebook no longer uses
    would shrink nothing, and fails here)."""
    index, names = _parameters(notebook)
    if unknown := set(sizes) - names:
        raise AssertionError(f"the parameters cell assigns {sorted(names)}, not "
                             f"{sorted(unknown)}")
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(
        "\n".join(f"{name} = {value!r}" for name, value in sizes.items())))


def _execute(path: pathlib.Path) -> None:
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    cheap = CHEAP_COMPILATION.get(path.name, set())
    if cheap is not None:
        _compile_cheaply(notebook, cheap)
    if path.name in SMALLER:
        _smaller(notebook, SMALLER[path.name])
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


def test_the_smaller_sizes_name_sizes_the_notebooks_set():
    """Each override names a notebook and a size its parameters cell sets, and the cells
    compiled cheaply exist (nothing here runs a notebook)."""
    by_name = {path.name: path for path in NOTEBOOKS}
    for name, sizes in SMALLER.items():
        notebook = nbformat.read(by_name[name], as_version=4)
        index, names = _parameters(notebook)
        assert set(sizes) <= names, (name, sorted(set(sizes) - names))
        assert index < min(CHEAP_COMPILATION.get(name) or {len(notebook.cells)})
    for name, cells in CHEAP_COMPILATION.items():
        notebook = nbformat.read(by_name[name], as_version=4)
        assert all(notebook.cells[index].cell_type == "code" for index in cells or ()), name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path):
    start([path])  # already queued when the session started, unless run on its own
    background.STARTED[path].result()  # its CellExecutionError, if a cell failed
