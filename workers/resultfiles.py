"""Result files on disk (speech audio): one folder per job, unique per store, written without links.

- A job's folder is ``results/job-<id>-<created>``: the id alone repeats across stores that share
  one ``BATCHER_HOME`` (each store has its job 1), and one store's export must never point at
  another's audio. The job's creation time (to the microsecond) tells the two apart without a
  schema change, and it is read from the store, so every worker derives the same folder.
- Files are written the way a hostile folder cannot bend: the job folder is opened with
  ``O_NOFOLLOW | O_DIRECTORY`` (a symlinked job folder is refused, not followed), the data goes to a
  fresh temporary name created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` inside that folder, and
  ``rename`` puts it in place, replacing whatever link or file had the final name instead of
  writing through it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from datetime import datetime
from pathlib import Path

from jobs.errors import BatcherError


class ResultFileError(BatcherError):
    """Raised when a result file cannot be written safely (a linked job folder, say)."""


def job_folder(results_dir: Path, job_id: int, created_at: datetime) -> Path:
    """The folder of one job's result files (see the module docstring)."""
    return results_dir / f"job-{job_id}-{created_at:%Y%m%dT%H%M%S%f}"


def write_result_file(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` as ``folder/name`` atomically, following no link; return the path."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o755)
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ResultFileError(
                f"the results folder {folder} is a symbolic link or not a folder; batcher does not "
                "write through links there: remove it and run the job again"
            ) from None
        raise
    try:
        _write_in(dir_fd, name, data)
    finally:
        os.close(dir_fd)
    return folder / name


def _write_in(dir_fd: int, name: str, data: bytes) -> None:
    tmp = f".{name}.{uuid.uuid4().hex}.part"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        os.unlink(tmp, dir_fd=dir_fd)
        raise
