"""Resumable, verified HTTP downloads shared by the Zenodo and NBIA clients.

A file is streamed into ``<name>.part`` next to its destination. An interrupted transfer
(dropped connection, killed process) keeps the ``.part`` file and the next attempt asks the
server for the rest with an HTTP ``Range`` request. Only a file whose size and MD5 match
the published values is renamed to its final name, so a final name always means a
verified file. 5xx answers and dropped connections are retried with exponential backoff;
401/403 raise :class:`AuthError` at once (retrying cannot fix a token), and so does a host
name that cannot be resolved or a network that is unreachable (:class:`OfflineError`: this
machine is offline, waiting will not help).

Secrets: the access token is sent only as an ``Authorization`` header of the session.
Nothing here logs headers or URLs with query strings that could hold one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import requests
import urllib3

_Item = TypeVar("_Item")

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched and verified after all retries."""


class AuthError(DownloadError):
    """The server refused the request (HTTP 401/403): the token is missing, wrong or lacks access."""


class ChecksumError(DownloadError):
    """A downloaded file's size or MD5 differs from the published value."""


class OfflineError(DownloadError):
    """The server's name cannot be resolved or no network route exists: this machine is offline.

    Not retried: unlike a dropped connection or a busy server, it does not pass in seconds.
    """


def offline_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means "no network here" (a host name that does not resolve, an unreachable
    network), or None for errors worth retrying (refused or dropped connections, time-outs).

    requests wraps the cause in urllib3 errors; the chain (``reason``, ``__cause__``,
    ``__context__``, ``args``) is searched for it.
    """
    import errno
    import socket

    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        err = todo.pop()
        if not isinstance(err, BaseException) or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, urllib3.exceptions.NameResolutionError | socket.gaierror):
            host = getattr(getattr(err, "conn", None), "host", None)
            return (
                f"cannot resolve the host name {host}" if host else "cannot resolve the host name"
            )
        if isinstance(err, OSError) and err.errno in (errno.ENETUNREACH, errno.ENETDOWN):
            return f"network unreachable ({err.strerror})"
        todo += [getattr(err, "reason", None), err.__cause__, err.__context__, *err.args]
    return None


#: requests errors that no retry can fix: the URL itself is wrong.
_BAD_URL = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
)


def permanent_network_error(exc: BaseException, what: str) -> DownloadError | None:
    """The error to raise at once for a request failure that retrying cannot fix, or None."""
    reason = offline_reason(exc)
    if reason is not None:
        return OfflineError(f"{what}: {reason}")
    if isinstance(exc, _BAD_URL):
        return DownloadError(f"{what}: {exc}")
    return None


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch.

    Attributes:
        name: path relative to the destination folder (may contain ``/``).
        url: where to GET it (no secrets in it).
        size_bytes: published size, or None when the server does not say.
        md5: published MD5 hex digest, or None when the server does not publish one.
    """

    name: str
    url: str
    size_bytes: int | None = None
    md5: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``attempts`` in total, sleeping ``backoff_s * 2**k`` (capped) between them."""

    attempts: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    connect_timeout_s: float = 30.0
    read_timeout_s: float = 120.0

    def sleep(self, attempt: int) -> None:
        """Wait before retry number ``attempt`` (0-based)."""
        time.sleep(min(self.max_backoff_s, self.backoff_s * 2**attempt))


def md5_of_file(path: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES) -> str:
    """MD5 hex digest of a file, read in chunks (memory independent of file size)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def make_session(
    token: str | None = None, user_agent: str = "gensyn-downloader"
) -> requests.Session:
    """A requests session; ``token`` (if any) goes into the ``Authorization: Bearer`` header only."""
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    return session


def check_auth(response: requests.Response, what: str, token_hint: str) -> None:
    """Raise :class:`AuthError` with a fix-it message on 401/403 (never echoing the token)."""
    if response.status_code in (401, 403):
        raise AuthError(f"HTTP {response.status_code} for {what}: access refused. {token_hint}")


def sidecar_path(final: Path) -> Path:
    """The ``md5sum -c`` compatible record written next to each verified file."""
    return final.with_name(final.name + ".md5")


def already_verified(final: Path, remote: RemoteFile) -> bool:
    """True if ``final`` exists with the published size and MD5.

    A matching ``.md5`` sidecar (written after a verification) spares re-hashing on re-runs,
    unless the file was written after it; otherwise the file is hashed once and the sidecar
    written.
    """
    if not final.is_file():
        return False
    if remote.size_bytes is not None and final.stat().st_size != remote.size_bytes:
        return False
    if remote.md5 is None:
        return remote.size_bytes is not None
    want = remote.md5.lower()
    side = sidecar_path(final)
    if (
        side.is_file()
        and side.stat().st_mtime_ns >= final.stat().st_mtime_ns  # not rewritten since
        and side.read_text(encoding="utf-8").split(" ")[0].strip() == want
    ):
        return True
    if md5_of_file(final) != want:
        return False
    _write_sidecar(final, want)
    return True


def _write_sidecar(final: Path, md5: str) -> None:
    side = sidecar_path(final)
    tmp = side.with_name(side.name + PART_SUFFIX)
    tmp.write_text(f"{md5}  {final.name}\n", encoding="utf-8")
    os.replace(tmp, side)


def download_file(
    session: requests.Session,
    remote: RemoteFile,
    dest_dir: str | os.PathLike[str],
    *,
    retry: RetryPolicy | None = None,
    token_hint: str = "",
    on_bytes: Callable[[int], None] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Path:
    """Fetch ``remote`` into ``dest_dir/remote.name``, resuming a ``.part`` file, and verify it.

    Args:
        session: HTTP session (carries the token header, if any).
        remote: what to fetch and its published size / MD5.
        dest_dir: destination folder.
        retry: retry policy for 5xx answers, dropped connections and checksum mismatches.
        token_hint: appended to the 401/403 error (how to provide a token).
        on_bytes: called with the number of new bytes received (progress bars).
        chunk_bytes: streaming chunk size in bytes.

    Returns:
        The final path; it exists only if its size and MD5 match the published values.

    Raises:
        AuthError: on HTTP 401/403.
        OfflineError: the host name does not resolve or the network is unreachable.
        ChecksumError: if the file keeps arriving with the wrong size or MD5.
        DownloadError: if every attempt failed for another reason (4xx, 5xx, network).
    """
    retry = retry or RetryPolicy()
    final = Path(dest_dir) / remote.name
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + PART_SUFFIX)
    if already_verified(final, remote):
        if on_bytes:
            on_bytes(final.stat().st_size)  # counts towards the progress bar's total
        return final
    last_error = "no attempt made"
    for attempt in range(retry.attempts):
        if attempt:
            retry.sleep(attempt - 1)
        try:
            got_md5 = _fetch_into_part(
                session, remote, part, token_hint, on_bytes, chunk_bytes, retry
            )
        except AuthError:
            raise
        except _PermanentHTTPError as exc:
            raise DownloadError(str(exc)) from None
        except (
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            _TransientError,
            OSError,
        ) as exc:
            permanent = permanent_network_error(exc, remote.name)
            if permanent is not None:
                raise permanent from None
            last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "%s: attempt %d/%d failed (%s)",
                remote.name,
                attempt + 1,
                retry.attempts,
                last_error,
            )
            continue
        size = part.stat().st_size
        if remote.size_bytes is not None and size != remote.size_bytes:
            last_error = f"size {size} B differs from published {remote.size_bytes} B"
        elif remote.md5 is not None and got_md5 != remote.md5.lower():
            last_error = f"MD5 {got_md5} differs from published {remote.md5}"
        else:
            # Sidecar first: a crash between the two renames leaves a .part, never an
            # unverified final file.
            if remote.md5 is not None:
                _write_sidecar(final, remote.md5.lower())
            os.replace(part, final)
            return final
        # A wrong file is not resumable: start again from byte 0.
        log.warning("%s: %s; discarding and retrying", remote.name, last_error)
        part.unlink(missing_ok=True)
        if attempt == retry.attempts - 1:
            raise ChecksumError(f"{remote.name}: {last_error} after {retry.attempts} attempts")
    raise DownloadError(
        f"{remote.name}: gave up after {retry.attempts} attempts; last error: {last_error}"
    )


class _TransientError(Exception):
    """A failure worth retrying (5xx, short read)."""


class _PermanentHTTPError(Exception):
    """A 4xx other than 401/403/416: retrying will not help."""


def _fetch_into_part(
    session: requests.Session,
    remote: RemoteFile,
    part: Path,
    token_hint: str,
    on_bytes: Callable[[int], None] | None,
    chunk_bytes: int,
    retry: RetryPolicy,
) -> str:
    """Append the missing bytes to ``part``; return the MD5 of the whole part file
    ("" when ``remote.md5`` is None: nothing to compare with).

    The MD5 is computed while streaming (the bytes already on disk are hashed first), so a
    verified download reads each byte from disk at most once.
    """
    offset = part.stat().st_size if part.exists() else 0
    if remote.size_bytes is not None and offset > remote.size_bytes:
        part.unlink()
        offset = 0
    if remote.size_bytes is not None and offset == remote.size_bytes and offset > 0:
        return md5_of_file(part, chunk_bytes)  # complete already; the caller verifies it
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    timeout = (retry.connect_timeout_s, retry.read_timeout_s)
    # identity: the bytes on the wire are the file's bytes (Range and MD5 refer to them)
    headers["Accept-Encoding"] = "identity"
    with session.get(remote.url, headers=headers, stream=True, timeout=timeout) as resp:
        check_auth(resp, remote.name, token_hint)
        if resp.status_code == 416:  # our offset is past the end: the part is wrong or complete
            part.unlink(missing_ok=True)
            raise _TransientError("HTTP 416 (range not satisfiable); restarting from byte 0")
        if resp.status_code >= 500 or resp.status_code == 429:
            raise _TransientError(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise _PermanentHTTPError(f"{remote.name}: HTTP {resp.status_code} {resp.reason}")
        mode = "ab"
        if offset and resp.status_code == 206:
            start = _content_range_start(resp.headers.get("Content-Range", ""))
            if start != offset:
                raise _TransientError(f"server resumed at byte {start}, expected {offset}")
        elif offset:  # 200: the server ignored Range and sends everything
            mode = "wb"
            if on_bytes:
                on_bytes(-offset)
        hasher = _Hasher() if remote.md5 is not None else _NoHasher()
        try:
            if mode == "ab" and offset and remote.md5 is not None:
                with open(part, "rb") as fh:
                    while block := fh.read(chunk_bytes):
                        hasher.put(block)
            expected = resp.headers.get("Content-Length")
            received = 0
            with open(part, mode) as fh:
                # read1 hands over whatever has arrived (up to chunk_bytes), so the bytes
                # received before a dropped connection reach the .part file and are resumable.
                while block := resp.raw.read1(chunk_bytes):
                    fh.write(block)
                    hasher.put(block)
                    received += len(block)
                    if on_bytes:
                        on_bytes(len(block))
        finally:
            digest = hasher.finish()
        if expected is not None and received != int(expected):
            raise _TransientError(f"connection closed after {received} of {expected} bytes")
        return digest


class _NoHasher:
    """Stand-in when no checksum is published (NBIA ZIPs): nothing to hash."""

    def put(self, block: bytes) -> None:
        pass

    def finish(self) -> str:
        return ""


class _Hasher:
    """MD5 in a helper thread (hashlib releases the GIL), overlapping hashing with receiving.

    At most ``max_blocks`` blocks wait in the queue, so memory stays bounded.
    """

    def __init__(self, max_blocks: int = 16) -> None:
        import queue

        self._digest = hashlib.md5(usedforsecurity=False)
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=max_blocks)
        self._thread = threading.Thread(target=self._run, daemon=True, name="md5")
        self._thread.start()

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            self._digest.update(block)

    def put(self, block: bytes) -> None:
        self._queue.put(block)

    def finish(self) -> str:
        self._queue.put(None)
        self._thread.join()
        return self._digest.hexdigest()


def _content_range_start(header: str) -> int:
    # "bytes 100-999/1000"
    try:
        return int(header.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


def download_many(
    session: requests.Session,
    remotes: Sequence[RemoteFile],
    dest_dir: str | os.PathLike[str],
    *,
    workers: int = 4,
    retry: RetryPolicy | None = None,
    token_hint: str = "",
    skip: Iterable[str] = (),
    progress: bool = True,
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Download several files in parallel threads with one byte-counting progress bar.

    Args:
        session: HTTP session (requests sessions are safe for concurrent GETs).
        remotes: files to fetch.
        dest_dir: destination folder.
        workers: parallel downloads.
        retry: retry policy per file.
        token_hint: appended to 401/403 errors.
        skip: names already verified (not fetched again).
        progress: show a tqdm progress bar (bytes).

    Returns:
        (verified paths, failures as (name, reason)). An :class:`AuthError` is re-raised
        at once: every other file would fail the same way.
    """
    from tqdm.auto import tqdm

    skipped = set(skip)
    todo = [r for r in remotes if r.name not in skipped]
    total = sum(r.size_bytes or 0 for r in todo) or None
    lock = threading.Lock()
    bar = tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
        desc="download",
    )

    def on_bytes(n: int) -> None:
        with lock:
            bar.update(n)

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = {
                pool.submit(
                    download_file,
                    session,
                    r,
                    dest_dir,
                    retry=retry,
                    token_hint=token_hint,
                    on_bytes=on_bytes,
                ): r
                for r in todo
            }
            done, failed = gather_downloads(futures, lambda r: r.name)
    finally:
        bar.close()
    return done, failed


def gather_downloads(
    futures: dict[Future[Path], _Item],
    name: Callable[[_Item], str],
    on_done: Callable[[], None] | None = None,
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Collect parallel downloads as they finish: (paths, failures as (name, reason)).

    An :class:`AuthError` or :class:`OfflineError` cancels the downloads not yet started and
    propagates: a wrong token or a missing network fails every file, so there is no point
    going on. A reason does not repeat the item's name (the failure pairs it with the name).
    """
    done: list[Path] = []
    failed: list[tuple[str, str]] = []
    for fut in as_completed(futures):
        try:
            done.append(fut.result())
        except (AuthError, OfflineError):
            for other in futures:
                other.cancel()
            raise
        except DownloadError as exc:
            item = name(futures[fut])
            reason = str(exc)
            failed.append((item, reason.removeprefix(f"{item}: ")))
        if on_done is not None:
            on_done()
    return done, failed


def read_token(env_var: str, token_file: str | None) -> str | None:
    """Read an access token from the environment variable ``env_var`` or from ``token_file``.

    The environment wins. The file holds the token on its first line. Returns None if neither
    is set. The token is never logged.
    """
    value = os.environ.get(env_var, "").strip() if env_var else ""
    if value:
        return value
    if token_file:
        path = Path(token_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"token file {path} (config key ct_dataset.download.token_file) does not exist; create it with "
                f"the token on its first line, or set the environment variable {env_var}"
            )
        lines = path.read_text(encoding="utf-8").strip().splitlines()
        return lines[0].strip() if lines else None
    return None
