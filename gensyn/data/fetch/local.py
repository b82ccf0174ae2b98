"""What of a data set is already in its raw folder, checked without the network.

A download lists the remote files (a Zenodo record's files with size and MD5, an NBIA
collection's series) before fetching them; that listing is kept in the raw folder
(``<raw_dir>/.gensyn/<source>-<key>.json``), so later runs, on this machine or another one the
folder was copied to, can tell a complete folder from a partial one offline:

* a Zenodo file counts as present when it is there with the published size and MD5 (the
  ``.md5`` sidecar written after a verification spares re-hashing); an archive that is
  unpacked after download, when its folder ``<raw_dir>/<stem>/`` exists (unpacking is
  atomic, so such a folder is whole; the archive itself may be gone);
* an NBIA series counts as present when its folder ``<raw_dir>/<SeriesInstanceUID>/`` exists
  (the downloader renames it into place only after the CRC and image-count checks).

Without a listing (files that came from elsewhere), :func:`leftovers` finds the traces of an
unfinished download or unpack, and the caller checks the files the converter would read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gensyn.data.fetch.archives import archive_stem
from gensyn.data.fetch.download import PART_SUFFIX, RemoteFile, already_verified
from gensyn.data.fetch.nbia import Series

LISTING_DIR = ".gensyn"


def listing_path(raw_dir: str | os.PathLike[str], source: str, key: str) -> Path:
    """Where the listing of ``source`` (``zenodo`` | ``nbia``) item ``key`` is kept."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(key))
    return Path(raw_dir) / LISTING_DIR / f"{source}-{safe}.json"


def save_listing(path: Path, items: Sequence[dict[str, Any]]) -> None:
    """Write a listing (one dict per remote item) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + PART_SUFFIX)
    tmp.write_text(json.dumps(list(items), indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def load_listing(path: Path) -> list[dict[str, Any]] | None:
    """The listing saved at ``path``, or None when there is none (or it is unreadable)."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return items if isinstance(items, list) else None


def remote_files(items: Iterable[dict[str, Any]]) -> list[RemoteFile]:
    """:class:`RemoteFile` items of a saved Zenodo listing."""
    return [
        RemoteFile(
            name=str(i["name"]),
            url=str(i.get("url", "")),
            size_bytes=None if i.get("size_bytes") is None else int(i["size_bytes"]),
            md5=i.get("md5") or None,
        )
        for i in items
    ]


def file_status(raw_dir: Path, remote: RemoteFile, unpack: bool) -> str | None:
    """How ``remote`` is present in ``raw_dir``: ``md5`` / ``size`` (the file, verified against
    the listing), ``unpacked`` (with ``unpack``, an archive's folder: the converter reads that,
    not the archive), or None when it is missing or differs."""
    stem = archive_stem(remote.name) if unpack else None
    if stem:
        return "unpacked" if (raw_dir / stem).is_dir() else None
    if already_verified(raw_dir / remote.name, remote):
        return "md5" if remote.md5 else "size"
    return None


def missing_series(raw_dir: Path, uids: Iterable[str]) -> list[str]:
    """The series of ``uids`` whose folder ``raw_dir/<uid>/`` does not exist."""
    return [uid for uid in uids if not (raw_dir / uid).is_dir()]


def has_listings(raw_dir: Path) -> bool:
    """Whether a download has saved any listing in ``raw_dir`` (of any record or collection)."""
    return any((raw_dir / LISTING_DIR).glob("*.json"))


def _verified(rows: list[dict[str, Any]], raw_dir: Path) -> list[dict[str, Any]]:
    for row in rows:
        row.update(status="verified", reason="", path=str(raw_dir / row["name"]))
    return rows


def files_on_disk(
    raw_dir: Path, files: Sequence[RemoteFile], unpack: bool
) -> list[dict[str, Any]] | None:
    """Manifest rows (``status`` verified, ``checked`` how) when every file of a listing is in
    ``raw_dir`` (:func:`file_status`), else None."""
    rows = [
        {"name": f.name, "size_bytes": f.size_bytes, "md5": f.md5,
         "checked": file_status(raw_dir, f, unpack)}
        for f in files
    ]  # fmt: skip
    return _verified(rows, raw_dir) if all(r["checked"] for r in rows) else None


def series_on_disk(raw_dir: Path, series: Sequence[Series]) -> list[dict[str, Any]] | None:
    """Manifest rows when every listed NBIA series has its folder in ``raw_dir``, else None."""
    if missing_series(raw_dir, [s.uid for s in series]):
        return None
    rows = [
        {"name": s.uid, "patient_id": s.patient_id, "modality": s.modality,
         "image_count": s.image_count, "size_bytes": s.file_size_bytes, "checked": "folder"}
        for s in series
    ]  # fmt: skip
    return _verified(rows, raw_dir)


def found_by_pattern(
    raw_dir: Path, volumes: Sequence[str], tables: Sequence[str]
) -> list[dict[str, Any]]:
    """Manifest rows (``status`` found, ``checked`` pattern) for the volumes and label tables a
    converter found in ``raw_dir`` (paths below it)."""
    found = [(p, "volume") for p in volumes] + [(p, "label table") for p in tables]
    return [
        {"name": Path(p).relative_to(raw_dir).as_posix(), "kind": kind, "status": "found",
         "checked": "pattern", "reason": "", "path": str(p)}
        for p, kind in found
    ]  # fmt: skip


def leftovers(raw_dir: Path, unpack: bool) -> list[Path]:
    """Traces of an unfinished download or unpack below ``raw_dir``: ``*.part`` files,
    ``*.unpacking`` folders, NBIA ZIPs not yet unpacked and (with ``unpack``) archives whose
    folder is not there yet."""
    found = []
    for path in raw_dir.rglob("*"):
        name = path.name
        if name.endswith((PART_SUFFIX, ".unpacking")) or path.parent.name == ".zips":
            found.append(path)  # .zips: NBIA series fetched but not yet unpacked
        elif unpack and path.is_file() and path.parent == raw_dir:
            stem = archive_stem(name)
            if stem and not (raw_dir / stem).is_dir():
                found.append(path)
    return sorted(found)
