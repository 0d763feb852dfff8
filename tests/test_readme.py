"""README.md's Python examples run as written and print what they computed."""

import contextlib
import io
import pathlib
import re

import jax

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_every_python_block_runs_and_prints(tmp_path, monkeypatch):
    blocks = _python_blocks()
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)  # the run directories the examples write
    namespace: dict = {}  # one namespace: later blocks continue earlier ones, as in a notebook
    for number, block in enumerate(blocks):
        printed = io.StringIO()
        # the lecture's SVI runs long inner loops: with XLA's usual optimizations, as a
        # user runs it, 69 s -> 20 s (conftest turns most of them off for short programs)
        usual = "missing_svi(" in block
        before = jax.config.read("jax_disable_most_optimizations")
        jax.config.update("jax_disable_most_optimizations", before and not usual)
        try:
            with contextlib.redirect_stdout(printed):
                exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        finally:
            jax.config.update("jax_disable_most_optimizations", before)
        assert printed.getvalue().strip(), f"block {number} shows nothing:\n{block}"
