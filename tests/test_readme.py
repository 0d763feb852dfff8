"""README.md's Python examples run as written and print what they computed.

They run as a user runs them, in a fresh Python process (``python tests/test_readme.py``),
on the background runner's core (tests/background.py) while this process runs other
tests: the examples train, evaluate and run the lecture's SVI, 40 s of one core."""

import contextlib
import io
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import background

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def main() -> int:
    """Runs every block in one namespace (later blocks continue earlier ones, as in a
    notebook), in the current folder; 1 and the block on stderr if one fails or prints
    nothing."""
    cpu = os.environ.get("JLVM_README_CPU")
    if cpu is not None:  # the background runner's core, before JAX sizes its thread pools
        os.sched_setaffinity(0, {int(cpu)})
    import jax

    jax.config.update("jax_numpy_rank_promotion", "raise")  # broadcasting bugs cannot hide
    blocks = _python_blocks()
    if len(blocks) < 4:
        print(f"README.md holds {len(blocks)} python blocks, expected at least 4",
              file=sys.stderr)
        return 1
    namespace: dict = {}
    for number, block in enumerate(blocks):
        printed = io.StringIO()
        # the lecture's SVI runs long inner loops: with XLA's usual optimizations, as a
        # user runs it, 69 s -> 20 s (the tests turn most of them off for short programs)
        usual = "missing_svi(" in block
        before = jax.config.read("jax_disable_most_optimizations")
        jax.config.update("jax_disable_most_optimizations", before and not usual)
        try:
            with contextlib.redirect_stdout(printed):
                exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        finally:
            jax.config.update("jax_disable_most_optimizations", before)
        if not printed.getvalue().strip():
            print(f"block {number} shows nothing:\n{block}", file=sys.stderr)
            return 1
        print(printed.getvalue(), end="")
    return 0


def _run() -> subprocess.CompletedProcess:
    cpu = background.kernel_cpu()
    env = dict(os.environ, **({} if cpu is None else {"JLVM_README_CPU": str(cpu)}))
    with tempfile.TemporaryDirectory(prefix="jlvm-readme-") as folder:  # its run directories
        return subprocess.run([sys.executable, __file__], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=900)


def start() -> None:
    background.start("README.md", _run)


def test_every_python_block_runs_and_prints():
    start()  # already queued when the session started, unless run on its own
    done = background.STARTED["README.md"].result()
    assert done.returncode == 0, done.stderr[-5000:]
    assert done.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
