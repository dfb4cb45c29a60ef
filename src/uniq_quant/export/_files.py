"""Atomic writes: a file appears whole at its path or not at all."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

PathLike = str | os.PathLike[str]
_NEW_FILE_MODE = 0o666  # what open() asks for, before the umask


@contextlib.contextmanager
def atomic_target(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` atomically.

    The temporary file lives in the same folder, so ``os.replace`` is a rename on one file
    system: a crash leaves either the old file or the new one, never half of one. On an error
    the temporary file is removed and the error propagates. The file gets the permissions of a
    newly created file (safetensors writes owner-only files).

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"folder {str(target.parent)!r} does not exist; create it before writing "
            f"{target.name!r}"
        )
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, _NEW_FILE_MODE & ~_umask())  # writers may create it owner-only
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
