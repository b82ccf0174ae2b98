"""TCIA / NBIA REST API client: list a collection's series, fetch each series' DICOM ZIP.

Endpoints used (NBIA v1, public collections need no login; v2 takes a Bearer token):

* ``GET {api_url}/getCollectionValues`` -> ``[{"Collection": name}, ...]``
* ``GET {api_url}/getSeries?Collection=NAME`` -> ``[{"SeriesInstanceUID", "PatientID",
  "Modality", "ImageCount", "FileSize", ...}, ...]``
* ``GET {api_url}/getImage?SeriesInstanceUID=UID`` -> a ZIP of the series' DICOM files.

Why not ``tcia_utils``: its requests have no timeouts (a stalled server hangs a job forever),
it holds each ZIP in memory, cannot resume, verifies neither ZIP integrity nor image count,
turns errors into log lines and ``None`` return values, and pulls in IPython, plotly and
BeautifulSoup. The three endpoints above are simple enough to call with ``requests``.

A series is done when ``<dest>/<SeriesInstanceUID>/`` exists: it is unpacked into a
temporary folder and renamed only after the ZIP passed its CRC check and held the expected
number of DICOM files, so a killed job resumes at the first unfinished series.
"""

from __future__ import annotations

import difflib
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import requests

from gensyn.data.fetch.download import (
    DownloadError,
    RemoteFile,
    RetryPolicy,
    check_auth,
    download_file,
    permanent_network_error,
)

T = TypeVar("T")
DEFAULT_API_URL = "https://services.cancerimagingarchive.net/nbia-api/services/v1"
TOKEN_HINT = (
    "Public collections (LIDC-IDRI) need no token on the v1 API; for restricted collections "
    "use the v2 API and put an NBIA access token in the environment variable named by "
    "ct_dataset.download.token_env or the file named by ct_dataset.download.token_file."
)


class SeriesError(DownloadError):
    """A series ZIP is corrupt or holds the wrong number of images."""


@dataclass(frozen=True)
class Series:
    """One DICOM series as listed by ``getSeries``."""

    uid: str
    patient_id: str
    modality: str
    image_count: int
    file_size_bytes: int | None


def _get_json(
    session: requests.Session, url: str, params: dict[str, str], retry: RetryPolicy
) -> Any:
    last = ""
    for attempt in range(retry.attempts):
        if attempt:
            retry.sleep(attempt - 1)
        try:
            resp = session.get(
                url, params=params, timeout=(retry.connect_timeout_s, retry.read_timeout_s)
            )
        except requests.RequestException as exc:
            permanent = permanent_network_error(exc, url)
            if permanent is not None:  # offline or a malformed URL: retrying cannot help
                raise permanent from None
            last = f"{type(exc).__name__}: {exc}"
            continue
        check_auth(resp, url, TOKEN_HINT)
        if resp.status_code >= 500 or resp.status_code == 429:
            last = f"HTTP {resp.status_code}"
            continue
        if resp.status_code >= 400:
            raise DownloadError(f"{url}: HTTP {resp.status_code} {resp.reason}")
        if not resp.content.strip():  # NBIA answers an empty body for "no results"
            return []
        return resp.json()
    raise DownloadError(f"{url}: gave up after {retry.attempts} attempts; last error: {last}")


def list_collections(
    session: requests.Session, api_url: str = DEFAULT_API_URL, retry: RetryPolicy | None = None
) -> list[str]:
    """Names of all collections the API offers."""
    rows = _get_json(
        session, f"{api_url.rstrip('/')}/getCollectionValues", {}, retry or RetryPolicy()
    )
    return sorted(str(r["Collection"]) for r in rows)


def validate_collection(collection: str, available: list[str]) -> None:
    """Raise ValueError naming close matches if ``collection`` is not offered."""
    if collection in available:
        return
    close = difflib.get_close_matches(collection, available, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"ct_dataset.download.collection={collection!r} is not an NBIA collection ({len(available)} offered).{hint}"
    )


def list_series(
    session: requests.Session,
    collection: str,
    api_url: str = DEFAULT_API_URL,
    modality: str | None = "CT",
    retry: RetryPolicy | None = None,
) -> list[Series]:
    """All series of ``collection`` (optionally one modality), sorted by SeriesInstanceUID."""
    rows = _get_json(
        session,
        f"{api_url.rstrip('/')}/getSeries",
        {"Collection": collection},
        retry or RetryPolicy(),
    )
    out = []
    for r in rows:
        if modality and r.get("Modality") != modality:
            continue
        size = r.get("FileSize")
        out.append(
            Series(
                uid=str(r["SeriesInstanceUID"]),
                patient_id=str(r.get("PatientID", "")),
                modality=str(r.get("Modality", "")),
                image_count=int(r.get("ImageCount", 0)),
                file_size_bytes=int(size) if size not in (None, "") else None,
            )
        )
    return sorted(out, key=lambda s: s.uid)


def shard(items: list[T], shard_index: int, num_shards: int) -> list[T]:
    """Every ``num_shards``-th item starting at ``shard_index`` (a stable split for job arrays)."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(
            f"need 0 <= shard < num_shards and num_shards >= 1, got shard={shard_index} "
            f"num_shards={num_shards}"
        )
    return items[shard_index::num_shards]


def _is_dicom(data: bytes, name: str) -> bool:
    return data[128:132] == b"DICM" or name.lower().endswith(".dcm")


def verify_and_unpack(zip_path: Path, series_dir: Path, expected_images: int) -> int:
    """Check a series ZIP (CRC of every member, DICOM count) and unpack it atomically.

    The members are extracted into ``<series_dir>.unpacking`` and that folder is renamed to
    ``series_dir`` only when all checks pass. Returns the number of DICOM files.

    Raises:
        SeriesError: the ZIP is unreadable, a member fails its CRC, or the DICOM count differs.
    """
    tmp = series_dir.with_name(series_dir.name + ".unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    count = 0
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                name = Path(info.filename).name
                if not name or name.startswith("."):
                    continue
                data = zf.read(info)  # raises BadZipFile on a CRC mismatch
                if _is_dicom(data, name):
                    count += 1
                (tmp / name).write_bytes(data)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SeriesError(f"{zip_path.name}: corrupt ZIP ({exc})") from exc
    if expected_images and count != expected_images:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SeriesError(f"{zip_path.name}: {count} DICOM files, NBIA lists {expected_images}")
    os.replace(tmp, series_dir)
    return count


def download_series(
    session: requests.Session,
    series: Series,
    dest_dir: str | os.PathLike[str],
    api_url: str = DEFAULT_API_URL,
    retry: RetryPolicy | None = None,
    on_bytes: Any = None,
) -> Path:
    """Fetch, verify and unpack one series into ``dest_dir/<uid>/`` (skipped if already there).

    A ZIP that fails verification is deleted and fetched again (up to ``retry.attempts``).
    """
    retry = retry or RetryPolicy()
    dest = Path(dest_dir)
    series_dir = dest / series.uid
    if series_dir.is_dir():
        return series_dir
    url = f"{api_url.rstrip('/')}/getImage?SeriesInstanceUID={quote(series.uid)}"
    zips = dest / ".zips"
    # NBIA publishes no ZIP checksum or ZIP size; integrity comes from the CRCs and the count.
    remote = RemoteFile(name=f"{series.uid}.zip", url=url)
    last: Exception | None = None
    leftover = zips / remote.name  # fetched by a run killed before unpacking
    if leftover.is_file():
        try:
            verify_and_unpack(leftover, series_dir, series.image_count)
            leftover.unlink()
            return series_dir
        except SeriesError:
            leftover.unlink()
    for _ in range(retry.attempts):
        zip_path = download_file(
            session, remote, zips, retry=retry, token_hint=TOKEN_HINT, on_bytes=on_bytes
        )
        try:
            verify_and_unpack(zip_path, series_dir, series.image_count)
        except SeriesError as exc:
            last = exc
            zip_path.unlink(missing_ok=True)
            continue
        zip_path.unlink(missing_ok=True)
        return series_dir
    raise SeriesError(f"series {series.uid}: {last}")


def download_collection(
    session: requests.Session,
    series: list[Series],
    dest_dir: str | os.PathLike[str],
    *,
    api_url: str = DEFAULT_API_URL,
    workers: int = 4,
    retry: RetryPolicy | None = None,
    progress: bool = True,
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Download series in parallel threads. Returns (series folders, failures as (uid, reason)).

    An :class:`~gensyn.data.fetch.download.AuthError` stops everything at once.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from gensyn.data.fetch.download import gather_downloads

    with (
        tqdm(total=len(series), unit="series", disable=not progress, desc="NBIA") as bar,
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
    ):
        futures = {
            pool.submit(download_series, session, s, dest_dir, api_url, retry): s for s in series
        }
        return gather_downloads(futures, lambda s: s.uid, on_done=lambda: bar.update(1))
