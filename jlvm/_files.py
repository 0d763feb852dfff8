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


def read_npz(path: str | os.PathLike) -> dict[str, Any]:
    """Every array of a ``.npz`` file, read at once (no pickles). ``FileNotFoundError``,
    ``PermissionError`` or ``ValueError`` (not a readable .npz: truncated, another format)
    naming ``path``; ``describe`` turns any of them into one line."""
    import zipfile

    import numpy as np

    path = pathlib.Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not hasattr(loaded, "files"):
            raise ValueError(f"{path} is a .npy file (one array), not a .npz archive of "
                             "named arrays (np.savez writes one).")
        with loaded as archive:
            return {name: archive[name] for name in archive.files}
    except (EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable .npz archive ({error}).") from None
    except ValueError as error:
        if str(path) in str(error):
            raise
        raise ValueError(f"{path} is not a readable .npz archive ({error}).") from None


def read_npy(path: str | os.PathLike) -> Any:
    """The one array of a ``.npy`` file (no pickles); errors as ``read_npz``'s."""
    import numpy as np

    path = pathlib.Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (EOFError, ValueError) as error:
        raise ValueError(f"{path} is not a readable .npy file ({error}).") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise ValueError(f"{path} is a .npz archive, not a .npy file of one array.")
    return array


def describe(error: BaseException, path: str | os.PathLike) -> str:
    """One line for a failure to read ``path``."""
    if isinstance(error, FileNotFoundError):
        return f"{path} does not exist."
    if isinstance(error, IsADirectoryError):
        return f"{path} is a folder, not a file."
    if isinstance(error, OSError):
        return f"cannot read {path}: {error.strerror or error}."
    return " ".join(str(error).split())


def check_new(path: str | os.PathLike, *, suffixes: tuple[str, ...],
              what: str = "--out") -> pathlib.Path:
    """``path`` as a Path if a new file could be created there: ``ValueError`` naming
    ``what`` if it names no file, has none of ``suffixes`` (lower case, with the dot),
    exists, or lies in a folder that does not exist. Check before the work that fills it."""
    path = pathlib.Path(path)
    if not str(path) or path.name in ("", ".", ".."):
        raise ValueError(f"{what} must name a file, got {str(path)!r}.")
    if path.suffix.lower() not in suffixes:
        listed = ", ".join(suffixes)
        raise ValueError(f"{what} must end in {'one of ' if len(suffixes) > 1 else ''}"
                         f"{listed}, got {str(path)!r}.")
    if path.exists():
        raise ValueError(f"{path} exists; choose another {what} (nothing was overwritten).")
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist.")
    return path


def new_file(path: str | os.PathLike, write: Callable[[str], None], *,
             suffixes: tuple[str, ...], what: str = "--out") -> pathlib.Path:
    """Creates the new file ``path`` with ``write(temporary)``, atomically, never
    replacing a file (one created meanwhile by another process included): the checks and
    errors of ``check_new``."""
    path = check_new(path, suffixes=suffixes, what=what)
    try:
        return write_atomic(path, write, replace=False)
    except FileExistsError:
        raise ValueError(f"{path} exists; choose another {what} (nothing was "
                         "overwritten).") from None
