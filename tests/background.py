"""The session's background runner: work that runs in a process of its own, on the core
conftest leaves free (``JLVM_TESTS_KERNEL_CPU``), one piece at a time, while this process
runs the other tests on its core. The notebooks (test_notebooks.py), the examples of
README.md and docs/ (test_examples.py) and the tests' own `jlvm` processes (``jlvm``,
``job``) run there; their tests wait for the outcome."""

import atexit
import concurrent.futures
import os
import pathlib
import shutil
import sys
import tempfile
import time

_RUNNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="background")
STARTED: dict[object, concurrent.futures.Future] = {}
SECONDS: dict[object, float] = {}  # each finished job's wall time, for the session's summary


def kernel_cpu() -> int | None:
    """The core the background processes run on (None: no core to spare, run anywhere)."""
    cpu = os.environ.get("JLVM_TESTS_KERNEL_CPU")
    return None if cpu is None else int(cpu)


def start(name, work) -> None:
    """Queues ``work()`` under ``name`` (each name once)."""
    if name not in STARTED:
        STARTED[name] = _RUNNER.submit(_timed, name, work)


def _timed(name, work):
    began = time.perf_counter()
    try:
        return work()
    finally:
        SECONDS[name] = time.perf_counter() - began


def done() -> bool:
    """Whether everything queued so far has finished."""
    return all(future.done() for future in STARTED.values())


# the child sets its own affinity before anything starts threads (a preexec_fn would run
# Python between fork and exec, which JAX's threads make unsafe)
_ON_THE_CORE = ("import os, runpy, sys; cpu = os.environ.get('JLVM_TESTS_KERNEL_CPU'); "
                "cpu is None or os.sched_setaffinity(0, {int(cpu)}); "
                "sys.argv = ['jlvm', *sys.argv[1:]]; "
                "runpy.run_module('jlvm', run_name='__main__', alter_sys=True)")


def jlvm(*arguments) -> list[str]:
    """The command line of ``python -m jlvm ARGUMENTS...`` on the background runner's core."""
    return [sys.executable, "-c", _ON_THE_CORE, *map(str, arguments)]


def folder(name: str) -> pathlib.Path:
    """A new folder for a job's files, removed when the session ends."""
    path = pathlib.Path(tempfile.mkdtemp(prefix=f"jlvm-{name}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def key(work) -> str:
    return f"{work.__module__}.{work.__name__}"


def result(work):
    """``work()``'s result: queued on the runner when the session starts, for the tests
    marked ``@pytest.mark.background.with_args(work)`` (conftest), so that a test's own `jlvm`
    processes run on the other core while this process runs other tests."""
    start(key(work), work)
    return STARTED[key(work)].result()
