"""Zenodo REST API client: list a record's files and their published MD5 checksums.

Zenodo (InvenioRDM since 2023) answers ``GET {api_url}/records/{id}`` with JSON whose
``files`` is a list of ``{"key", "size", "checksum": "md5:<hex>", "links": {"self": ...}}``
(the ``self`` link ends in ``/content`` and streams the bytes). Restricted records may list
their files only under ``GET {api_url}/records/{id}/files`` as ``{"entries": [...]}`` with
``links.content``; both shapes are read here. Older records used ``filename``/``filesize``
and ``links.download``; those names are accepted too.

Access to restricted records (RAD-ChestCT is one) needs a personal access token, sent as an
``Authorization: Bearer`` header by :func:`gensyn.data.fetch.download.make_session`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from gensyn.data.fetch.download import (
    AuthError,
    DownloadError,
    RemoteFile,
    RetryPolicy,
    check_auth,
    permanent_network_error,
)

DEFAULT_API_URL = "https://zenodo.org/api"


def token_hint(env_var: str) -> str:
    """The fix-it text for a refused request (names where the token comes from, never the token)."""
    return (
        "Zenodo needs a personal access token with access to this record: request access on the "
        "record's page, create a token at zenodo.org (Account > Applications > Personal access "
        f"tokens) and put it in the environment variable {env_var} or in a file named by "
        "ct_dataset.download.token_file (never in a YAML file)."
    )


def _get_json(session: requests.Session, url: str, hint: str, retry: RetryPolicy) -> Any:
    last = ""
    for attempt in range(retry.attempts):
        if attempt:
            retry.sleep(attempt - 1)
        try:
            resp = session.get(url, timeout=(retry.connect_timeout_s, retry.read_timeout_s))
        except requests.RequestException as exc:
            permanent = permanent_network_error(exc, url)
            if permanent is not None:  # offline or a malformed URL: retrying cannot help
                raise permanent from None
            last = f"{type(exc).__name__}: {exc}"
            continue
        check_auth(resp, url, hint)
        if resp.status_code == 404:
            raise DownloadError(
                f"{url}: HTTP 404, no such Zenodo record (check ct_dataset.download.record_id)"
            )
        if resp.status_code >= 500 or resp.status_code == 429:
            last = f"HTTP {resp.status_code}"
            continue
        if resp.status_code >= 400:
            raise DownloadError(f"{url}: HTTP {resp.status_code} {resp.reason}")
        return resp.json()
    raise DownloadError(f"{url}: gave up after {retry.attempts} attempts; last error: {last}")


def parse_file_entries(entries: list[dict[str, Any]], record_url: str) -> list[RemoteFile]:
    """Turn Zenodo file entries (either API shape) into :class:`RemoteFile` items.

    Raises:
        ValueError: if an entry lacks a name or a download link, or has a non-MD5 checksum.
    """
    files: list[RemoteFile] = []
    for entry in entries:
        name = entry.get("key") or entry.get("filename")
        links = entry.get("links") or {}
        url = links.get("content") or links.get("self") or links.get("download")
        if not name:
            raise ValueError(f"{record_url}: file entry without 'key': {sorted(entry)}")
        if not url:
            url = f"{record_url}/files/{quote(name)}/content"
        checksum = entry.get("checksum")
        md5 = None
        if checksum:
            algo, _, value = str(checksum).partition(":")
            if not value:  # legacy API: bare hex digest
                algo, value = "md5", algo
            if algo.lower() != "md5":
                raise ValueError(
                    f"{record_url}: {name} has a {algo} checksum; only md5 is supported"
                )
            md5 = value.lower()
        size = entry.get("size", entry.get("filesize"))
        files.append(
            RemoteFile(
                name=name, url=url, size_bytes=int(size) if size is not None else None, md5=md5
            )
        )
    return files


def list_record_files(
    session: requests.Session,
    record_id: int | str,
    *,
    api_url: str = DEFAULT_API_URL,
    env_var: str = "ZENODO_TOKEN",
    retry: RetryPolicy | None = None,
) -> list[RemoteFile]:
    """List the files of Zenodo record ``record_id`` with sizes and MD5 checksums.

    Raises:
        AuthError: the record or its files are restricted and the token is missing or refused.
        DownloadError: the record does not exist or the API kept failing.
    """
    retry = retry or RetryPolicy()
    hint = token_hint(env_var)
    record_url = f"{api_url.rstrip('/')}/records/{record_id}"
    record = _get_json(session, record_url, hint, retry)
    files = record.get("files")
    if isinstance(files, dict):  # InvenioRDM files endpoint shape embedded
        files = files.get("entries")
    if not files:
        listing = _get_json(session, f"{record_url}/files", hint, retry)
        files = listing.get("entries") if isinstance(listing, dict) else listing
    if not files:
        raise AuthError(f"Zenodo record {record_id} lists no files (restricted?). {hint}")
    return parse_file_entries(list(files), record_url)
