"""Unpacking of verified downloads (.zip, .tar, .tar.gz) into folders, atomically and safely."""

from __future__ import annotations

import os
from pathlib import Path

from gensyn.data.fetch.download import DownloadError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def archive_stem(name: str) -> str | None:
    """``name`` without its archive suffix, or None if it is not a .zip/.tar(.gz) archive."""
    low = name.lower()
    return next((name[: -len(sfx)] for sfx in ARCHIVE_SUFFIXES if low.endswith(sfx)), None)


def unpack_archive(archive: str | os.PathLike[str], dest_root: str | os.PathLike[str]) -> Path:
    """Extract a verified archive into ``dest_root/<stem>/`` atomically; skip if already there.

    Members are extracted into ``<stem>.unpacking`` and the folder is renamed when complete,
    so a folder named ``<stem>`` is always whole. Members that would land outside the folder
    (absolute paths, ``..``) are refused.

    Raises:
        DownloadError: the archive is corrupt or unsafe.
    """
    import shutil
    import tarfile
    import zipfile

    archive = Path(archive)
    stem = archive_stem(archive.name)
    if stem is None:
        raise ValueError(f"{archive.name} is not an archive ({', '.join(ARCHIVE_SUFFIXES)})")
    target = Path(dest_root) / stem
    if target.is_dir():
        return target
    tmp = target.with_name(target.name + ".unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    out = (tmp / info.filename).resolve()
                    if not out.is_relative_to(tmp.resolve()):
                        raise DownloadError(
                            f"{archive.name}: member {info.filename!r} escapes the folder"
                        )
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data")  # refuses absolute paths, '..' and devices
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(f"{archive.name}: cannot unpack ({exc})") from exc
    except DownloadError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, target)
    return target
