"""The session's background runner: work that runs in a process of its own, on the core
conftest leaves free (``JLVM_TESTS_KERNEL_CPU``), one piece at a time, while this process
runs the other tests on its core. The notebooks (test_notebooks.py) and the README's
examples (test_readme.py) run there; their tests wait for the outcome."""

import concurrent.futures
import os

_RUNNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="background")
STARTED: dict[object, concurrent.futures.Future] = {}


def kernel_cpu() -> int | None:
    """The core the background processes run on (None: no core to spare, run anywhere)."""
    cpu = os.environ.get("JLVM_TESTS_KERNEL_CPU")
    return None if cpu is None else int(cpu)


def start(name, work) -> None:
    """Queues ``work()`` under ``name`` (each name once)."""
    if name not in STARTED:
        STARTED[name] = _RUNNER.submit(work)


def done() -> bool:
    """Whether everything queued so far has finished."""
    return all(future.done() for future in STARTED.values())
