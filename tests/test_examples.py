"""The Python examples of README.md and of the documentation's pages (docs/*.md) run as
written and print what they computed.

They run as a user runs them, in a fresh Python process (``python tests/test_examples.py``),
on the background runner's core (tests/background.py) while this process runs other
tests: the examples train, evaluate and run the lecture's SVI. Each page's blocks run in
one namespace (later blocks continue earlier ones, as in a notebook), in a folder of their
own."""

import contextlib
import io
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import background

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(page: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)


def main() -> int:
    """Runs every page's blocks, each page in a namespace and a subfolder of its own under
    the current folder; 1 and the block on stderr if one fails or prints nothing."""
    cpu = os.environ.get("JLVM_EXAMPLES_CPU")
    if cpu is not None:  # the background runner's core, before JAX sizes its thread pools
        os.sched_setaffinity(0, {int(cpu)})
    import jax

    jax.config.update("jax_numpy_rank_promotion", "raise")  # broadcasting bugs cannot hide
    blocks = {page: python_blocks(page) for page in PAGES}
    if sum(map(len, blocks.values())) < 12 or not blocks[PAGES[0]]:
        print(f"expected README.md's example and at least 12 blocks in all, found "
              f"{ {page.name: len(found) for page, found in blocks.items()} }", file=sys.stderr)
        return 1
    home = pathlib.Path.cwd()
    for page, found in blocks.items():
        folder = home / page.stem
        folder.mkdir()
        os.chdir(folder)
        namespace: dict = {}
        for number, block in enumerate(found):
            printed = io.StringIO()
            # the lecture's SVI runs long inner loops: with XLA's usual optimizations, as a
            # user runs it, 69 s -> 20 s (the tests turn most of them off for short programs)
            usual = "missing_svi(" in block
            before = jax.config.read("jax_disable_most_optimizations")
            jax.config.update("jax_disable_most_optimizations", before and not usual)
            start = time.perf_counter()
            try:
                with contextlib.redirect_stdout(printed):
                    exec(compile(block, f"{page.name} python block {number}", "exec"), namespace)
            except Exception:
                print(f"{page.name} python block {number} failed:\n{block}", file=sys.stderr)
                raise
            finally:
                jax.config.update("jax_disable_most_optimizations", before)
            if not printed.getvalue().strip():
                print(f"{page.name} python block {number} shows nothing:\n{block}",
                      file=sys.stderr)
                return 1
            print(f"[{page.name} block {number}, {time.perf_counter() - start:.1f} s]")
            print(printed.getvalue(), end="")
    return 0


def _run() -> subprocess.CompletedProcess:
    cpu = background.kernel_cpu()
    env = dict(os.environ, **({} if cpu is None else {"JLVM_EXAMPLES_CPU": str(cpu)}))
    with tempfile.TemporaryDirectory(prefix="jlvm-examples-") as folder:  # their run directories
        return subprocess.run([sys.executable, __file__], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=900)


def start() -> None:
    background.start("examples", _run)


def test_every_python_block_runs_and_prints():
    start()  # already queued when the session started, unless run on its own
    done = background.STARTED["examples"].result()
    assert done.returncode == 0, done.stderr[-5000:]
    assert done.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
