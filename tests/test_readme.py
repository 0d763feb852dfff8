"""README.md's Python examples run as written and print what they computed."""

import contextlib
import io
import pathlib
import re

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
        with contextlib.redirect_stdout(printed):
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        assert printed.getvalue().strip(), f"block {number} shows nothing:\n{block}"
