"""Test configuration: CPU with four simulated devices, strict rank promotion (broadcasting
bugs cannot hide), and run directories trained once per session."""

import atexit
import contextlib
import io
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA's persistent compilation cache, fresh for each session and shared with the
# subprocesses and notebook kernels the tests start: the same step compiled again (a new
# closure of the same computation, a second `jlvm train` process) is read back, not rebuilt
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="jlvm-tests-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
# XLA with most of its optimization passes off, in this process and in the processes the
# tests start (which inherit it, so a subprocess's numbers compare with this process's):
# the tests' programs are small and run briefly, so compiling them dominates, and compiling
# without those passes is faster (test_runs.py alone: 219 s -> 139 s). The notebooks'
# kernels keep the usual setting (test_notebooks.py): their longer computations pay for it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# four CPU devices in this process, so that data parallelism is tested here rather than in
# subprocesses that pay for JAX's start and their own compilations (single-device code
# runs on the first device exactly as before)
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=4").strip()
# XLA's CPU backend without its MLIR fusion emitters (the older LLVM emitters instead):
# compiling, three quarters of the suite's time, takes less than half as long (three
# typical programs: 2.4 s -> 1.0 s) and the programs run as fast (0.041 s both)
if "xla_cpu_use_fusion_emitters" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_cpu_use_fusion_emitters=false"

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
# The tests check mathematics to float32 accuracy; on NVIDIA GPUs XLA's default float32
# matmuls use TF32 (10-bit mantissa), off by ~1e-2 nats on these models. A hardware speed
# choice, not a bug in an estimator: the suite pins full precision so it means the same
# on every device.
jax.config.update("jax_default_matmul_precision", "highest")

# small networks on the bundled digits: every run below trains in seconds
TINY = ["--latent-dim", "2", "--hidden-dims", "16", "--batch-size", "100"]
EXTRA = {"svi": ["--inner-steps", "2"], "semi": ["--inner-steps", "2"],
         "gmm": ["--components", "3"]}


_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def pytest_configure(config):
    # One core for this process, another for the notebooks' kernel (test_notebooks.py), set
    # before JAX starts its thread pools: XLA sizes them by the CPUs a thread may run on, and
    # two processes whose pools each span both cores of a 2-core machine wait on each other's
    # preempted threads (a 6 s test took 76 s beside a notebook; pinned, 8 s)
    if len(_CPUS) >= 2 and "JLVM_TESTS_KERNEL_CPU" not in os.environ:
        os.sched_setaffinity(0, _CPUS[1:])
        os.environ["JLVM_TESTS_KERNEL_CPU"] = str(_CPUS[0])
    config.addinivalue_line(
        "markers", "background(work, ...): the test waits for work() (background.result), "
        "queued on the background runner when the session starts")
    config.addinivalue_line(
        "markers", "optimized: the test's programs are compiled with XLA's usual "
        "optimizations (conftest turns most of them off for the others): they run long enough "
        "to repay the longer compilation")


@pytest.fixture(autouse=True)
def _xla_optimizations(request):
    """XLA's usual optimizations for the tests marked ``optimized`` (a program compiled for
    an earlier test is reused as it was)."""
    if request.node.get_closest_marker("optimized") is None:
        yield
        return
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture
def key():
    return jax.random.PRNGKey(20261124)


class TrainedRun:
    """A run directory trained by ``jlvm train`` once per session, with what it printed."""

    def __init__(self, path, code, stdout, stderr):
        self.path, self.code, self.stdout, self.stderr = path, code, stdout, stderr

    def copy(self, destination):
        """A private copy to change (the session's original is shared by many tests)."""
        shutil.copytree(self.path, destination)
        return destination


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """``trained(model) -> TrainedRun``: a 2-epoch run of ``model`` on the digits with TINY
    sizes, trained on first use and shared by the whole session. Never change it in place;
    ``copy`` it."""
    from jlvm import cli

    root = tmp_path_factory.mktemp("trained")
    cache = {}

    def get(model: str) -> TrainedRun:
        if model not in cache:
            out = root / model
            stdout, stderr = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                code = cli.main(["train", "--model", model, "--epochs", "2", "--out", str(out),
                                 *(TINY if model != "gmm" else []), *EXTRA.get(model, [])])
            assert code == 0, stderr.getvalue()
            cache[model] = TrainedRun(out, code, stdout.getvalue(), stderr.getvalue())
        return cache[model]

    return get


@pytest.fixture(scope="module", autouse=True)
def _free_compiled_programs():
    """Each module's compiled programs are dropped when it ends (a later module that needs
    one again reads it back from the persistent cache): the session's memory stays that of
    one module, not of all of them."""
    yield
    jax.clear_caches()
    import ctypes
    import gc

    gc.collect()
    try:  # and the freed memory back to the system (glibc keeps it for reuse otherwise)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# tests that start two JAX processes at once: they run last, after the background runner
# is done, so that at most three JAX processes share the machine's memory at a time
_TWO_PROCESSES = ("test_distributed_training_over_two_processes_equals_one_device",
                  "test_one_process_of_a_distributed_run_reads_the_steps_alone")


@pytest.fixture(autouse=True)
def _both_cores_for_two_processes(request):
    """The two-process tests start their processes with every core once the background
    runner is done (each process then has a core of its own)."""
    if getattr(request.node, "originalname", "") in _TWO_PROCESSES and len(_CPUS) >= 2:
        import background

        if background.done():
            os.sched_setaffinity(0, _CPUS)
    yield


# the tests that wait for work on the background runner (tests/background.py)
_BACKGROUND = ("test_every_python_block_runs_and_prints", "test_notebook_runs",
               "test_module_passes_in_its_own_process")


def pytest_collection_modifyitems(session, config, items):
    """The tests that wait for the background runner after every other test of this
    process, so that it never waits while it has tests left; then the two-process tests.
    Where test_elsewhere.py is collected, the modules it runs in processes of their own
    are left out here."""
    elsewhere = [item for item in items
                 if getattr(item, "originalname", "") == "test_module_passes_in_its_own_process"]
    if elsewhere:
        modules = {item.callspec.params["module"] for item in elsewhere}
        kept = [item for item in items if item.path.name not in modules]
        if len(kept) < len(items):
            config.hook.pytest_deselected(items=[i for i in items if i not in kept])
            items[:] = kept

    def place(item):
        name = getattr(item, "originalname", "")
        return 2 if name in _TWO_PROCESSES else 1 if name in _BACKGROUND else 0

    items.sort(key=place)


_LANE = {}  # when this process's own tests began and when it began waiting for the runner


def pytest_runtest_setup(item):
    import time

    _LANE.setdefault("began", time.perf_counter())
    if getattr(item, "originalname", "") in _BACKGROUND:
        _LANE.setdefault("waiting", time.perf_counter())


def pytest_collection_finish(session):
    """Queues the collected background tests' work (the examples of README.md and docs/
    first, then the notebooks, see test_examples.py and test_notebooks.py): it runs in
    processes of its own while the other tests run here."""
    def named(name):
        return [item for item in session.items
                if getattr(item, "originalname", None) == name]

    import background

    for item in session.items:  # the tests' own jlvm processes first: they are short, and
        # needed early by this process
        marker = item.get_closest_marker("background")
        for work in marker.args if marker else ():
            background.start(background.key(work), work)
    if elsewhere := named("test_module_passes_in_its_own_process"):
        elsewhere[0].module.start([item.callspec.params["module"] for item in elsewhere])
    if examples := named("test_every_python_block_runs_and_prints"):
        examples[0].module.start()
    if notebooks := named("test_notebook_runs"):  # the module pytest imported
        notebooks[0].module.start([item.callspec.params["path"] for item in notebooks])


def pytest_terminal_summary(terminalreporter):
    """The background runner's jobs with their wall times, beside pytest's slowest tests:
    the runner's core has the same budget as this process's."""
    import sys

    background = sys.modules.get("background")
    if background is None or not background.SECONDS:
        return
    seconds = background.SECONDS
    terminalreporter.section("background runner (its own core): slowest jobs")
    for name, took in sorted(seconds.items(), key=lambda item: -item[1])[:10]:
        label = name.name if hasattr(name, "name") else str(name)
        terminalreporter.write_line(f"{took:7.2f}s {label}")
    terminalreporter.write_line(f"{sum(seconds.values()):7.2f}s in all, {len(seconds)} jobs")
    # how to balance the two cores: the lane that ends last sets the session's time
    if _LANE.get("waiting", 0.0) > _LANE.get("began", 0.0):
        terminalreporter.write_line(f"{_LANE['waiting'] - _LANE['began']:7.2f}s this process's "
                                    f"own tests, before it waited for the runner")
