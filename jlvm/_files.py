"""Files that are never half-written: write to a temporary name, then rename into place.

Temporaries are named ``.NAME.jlvm-tmp-XXXX`` in the target's folder (a rename is atomic
only within one file system). A process killed between the two steps leaves such a file
behind; ``remove_stale_temporaries`` deletes them when the folder's next owner starts.
Files get the mode an ordinary ``open`` would give (0666 minus the umask), not the 0600 of
``tempfile.mkstemp``.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any

TEMPORARY_MARK = ".jlvm-tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write: Callable[[str], None], *,
                 replace: bool = True) -> pathlib.Path:
    """Calls ``write(temporary_path)``, then renames the temporary to ``path``.

    Args:
      path: the file to create.
      write: writes the whole content to the path it is given.
      replace: if False, an existing ``path`` is never replaced: ``FileExistsError``
        (a hard link, which fails if the name is taken, claims the name atomically).

    A failure (a full disk, an exception in ``write``) leaves ``path`` as it was and
    removes the temporary.
    """
    path = pathlib.Path(path)
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent,
                                             prefix=f".{path.name}{TEMPORARY_MARK}")
        os.close(handle)
        os.chmod(temporary, 0o666 & ~_umask())
        write(temporary)
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    except OSError as error:
        if (temporary is None or error.filename in (None, temporary)) and not isinstance(
                error, FileExistsError):
            # say which file could not be written, not the temporary's name
            raise type(error)(error.errno, error.strerror, str(path)) from error
        raise
    finally:
        if temporary is not None:
            pathlib.Path(temporary).unlink(missing_ok=True)
    return path


def write_text(path: str | os.PathLike, text: str, *, replace: bool = True) -> pathlib.Path:
    """``text`` written atomically to ``path`` (see ``write_atomic``)."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    return write_atomic(path, write, replace=replace)


def dumps(value: Any, **kwargs: Any) -> str:
    """JSON text of ``value``; NaN and infinity are refused (they are not JSON)."""
    return json.dumps(value, allow_nan=False, **kwargs)


def write_json_lines(path: str | os.PathLike, records: list[dict]) -> pathlib.Path:
    return write_text(path, "".join(dumps(record) + "\n" for record in records))


def remove_stale_temporaries(folder: str | os.PathLike) -> list[pathlib.Path]:
    """Deletes the temporaries that killed writers left in ``folder``; returns them.

    Call it only while no other process writes to ``folder`` (the run directory's lock)."""
    removed = []
    for candidate in pathlib.Path(folder).glob(f".*{TEMPORARY_MARK}*"):
        if candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed
