"""Test modules that run in a pytest process of their own on the background runner's core
(tests/background.py) when the whole suite runs, so that the two cores share the suite's
work: ``MODULES`` below, self-contained (no session fixtures). conftest leaves their tests
out of this process's session when this test is collected with them, and queues the
module's own session at collection; each test here waits for one module's outcome (its
pytest output on failure). Run a module directly (``pytest tests/test_ais.py``) and its
tests run in that process as usual."""

import os
import pathlib
import subprocess
import sys

import background
import pytest

HERE = pathlib.Path(__file__).resolve().parent
# measured at the previous stop, in the whole suite: the background runner's jobs took 468 s
# and this process's own tests 561 s; these two (about 25 s and 15 s) even the lanes
MODULES = ("test_ais.py", "test_incomplete.py", "test_flows.py")


def _pytest_on_the_core(module: str) -> subprocess.CompletedProcess:
    cpu = background.kernel_cpu()
    pin = "" if cpu is None else f"os.sched_setaffinity(0, {{{cpu}}}); "
    code = (f"import os, sys; {pin}import pytest; "
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '--durations=5', "
            f"{str(HERE / module)!r}]))")
    return subprocess.run([sys.executable, "-c", code], cwd=HERE.parent, env=dict(os.environ),
                          capture_output=True, text=True, timeout=900)


def start(modules) -> None:
    for module in modules:
        background.start(module, lambda module=module: _pytest_on_the_core(module))


@pytest.mark.parametrize("module", MODULES)
def test_module_passes_in_its_own_process(module):
    start([module])  # already queued when the session started, unless run on its own
    done = background.STARTED[module].result()
    assert done.returncode == 0, (done.stdout + done.stderr)[-8000:]
    print(done.stdout.strip().splitlines()[-1])
