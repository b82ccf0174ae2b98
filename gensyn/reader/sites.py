"""Run a study's reader sites: credentials, start or connect, collect answers, stop.

``sites.json`` (written by the serve stage) records each reader's server URL, project,
data folder, port and process id; credentials are never written anywhere, they are read
from environment variables each time.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gensyn.base import io
from gensyn.base.errors import GensynError
from gensyn.reader.analyze import ANSWER_COLUMNS
from gensyn.reader.labelstudio import (
    LabelStudioClient,
    LabelStudioServer,
    label_studio_executable,
    prepare_database_template,
)
from gensyn.reader.serve import (
    ReaderSite,
    answers_from_tasks,
    check_reader_id,
    fetch_answers,
    setup_site,
)


@dataclass
class Credentials:
    """Admin login (or API token) and one password per reader, from the environment."""

    admin_email: str = ""
    admin_password: str = field(default="", repr=False)
    admin_token: str = field(default="", repr=False)
    reader_passwords: dict[str, str] = field(default_factory=dict, repr=False)


def credentials_from_env(
    readers: Sequence[str],
    admin_email_env: str,
    admin_password_env: str,
    reader_password_env: str,
    admin_token_env: str = "",
    need_readers: bool = True,
    env: Mapping[str, str] | None = None,
) -> Credentials:
    """Read credentials; GensynError listing every missing variable.

    ``reader_password_env`` contains ``{reader}``, replaced by each reader id.
    """
    env = os.environ if env is None else env
    missing = []
    token = env.get(admin_token_env, "") if admin_token_env else ""
    creds = Credentials(env.get(admin_email_env, ""), env.get(admin_password_env, ""), token)
    if not token:
        missing += [v for v in (admin_email_env, admin_password_env) if not env.get(v)]
    for reader in readers:
        var = reader_password_env.format(reader=check_reader_id(reader))
        if env.get(var):
            creds.reader_passwords[reader] = env[var]
        elif need_readers:
            missing.append(var)
    if missing:
        raise GensynError(
            "reader study credentials missing: set the environment variables "
            + ", ".join(missing)
            + " (passwords: at least 8 characters; see docs/reader_study.md)"
        )
    return creds


def admin_client(url: str, creds: Credentials) -> LabelStudioClient:
    """The coordinator's connection to one server (API token if given, else login)."""
    if creds.admin_token:
        return LabelStudioClient.with_token(url, creds.admin_token)
    return LabelStudioClient.login(url, creds.admin_email, creds.admin_password)


def start_server(
    site: ReaderSite, creds: Credentials, venv: str | os.PathLike[str], host: str, timeout_s: float
) -> LabelStudioServer:
    """Start (or find running) the server of ``site`` from its data folder."""
    exe = label_studio_executable(venv)
    template = prepare_database_template(exe, exe.parent.parent / "gensyn-db-template")
    server = LabelStudioServer(
        data_dir=Path(site.data_dir),
        port=site.port,
        admin_email=creds.admin_email,
        admin_password=creds.admin_password,
        host=host,
        venv_dir=exe.parent.parent,
        template_db=template,
    )
    if not server.is_healthy():
        server.start(timeout_s)
        site.pid = server.process.pid if server.process else 0
    return server


def start_sites(
    image_paths: Sequence[Path],
    readers: Sequence[str],
    creds: Credentials,
    data_root: Path,
    base_port: int,
    seed: int,
    venv: str | os.PathLike[str],
    host: str,
    timeout_s: float,
) -> tuple[list[ReaderSite], list[LabelStudioServer]]:
    """One local server per reader (port ``base_port + i``), each with project and account."""
    sites, servers = [], []
    for i, reader in enumerate(readers):
        site = ReaderSite(
            check_reader_id(reader),
            f"http://{host}:{base_port + i}",
            0,
            str(data_root / reader),
            base_port + i,
        )
        servers.append(start_server(site, creds, venv, host, timeout_s))
        admin = admin_client(site.url, creds)
        made = setup_site(admin, reader, creds.reader_passwords[reader], image_paths, seed)
        site.project_id = made.project_id
        sites.append(site)
    return sites, servers


def connect_sites(
    image_paths: Sequence[Path],
    urls: Mapping[str, str],
    readers: Sequence[str],
    creds: Credentials,
    seed: int,
) -> list[ReaderSite]:
    """Set up the study on servers someone else runs (one URL per reader)."""
    missing = [r for r in readers if r not in urls]
    if missing:
        raise GensynError(f"reader_study.server.urls has no URL for readers {missing}")
    sites = []
    for reader in readers:
        admin = admin_client(urls[reader], creds)
        sites.append(setup_site(admin, reader, creds.reader_passwords[reader], image_paths, seed))
    return sites


def read_sites(path: str | os.PathLike[str]) -> list[ReaderSite]:
    """Sites from ``sites.json``."""
    return [ReaderSite(**row) for row in io.read_json(path)]


def collect_answers(sites: Sequence[ReaderSite], creds: Credentials) -> pd.DataFrame:
    """Every reader's answers, pulled with the admin account (columns of ANSWER_COLUMNS +)."""
    rows: list[dict[str, Any]] = []
    for site in sites:
        rows += fetch_answers(admin_client(site.url, creds), site)
    return _answers_frame(rows)


def load_answers_file(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Answers from a CSV, or from a folder of Label Studio JSON exports ``<reader id>.json``."""
    src = Path(path)
    if src.is_dir():
        rows: list[dict[str, Any]] = []
        for export in sorted(src.glob("*.json")):
            tasks = json.loads(export.read_text(encoding="utf-8"))
            rows += answers_from_tasks(tasks, check_reader_id(export.stem))
        if not rows:
            raise GensynError(f"no answers in the Label Studio exports (*.json) in {src}")
        return _answers_frame(rows)
    if src.suffix.lower() == ".csv":
        return io.read_table(src)
    raise GensynError(
        f"answers_file {src} must be a CSV file or a folder of <reader id>.json exports"
    )


def _answers_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    cols = [*ANSWER_COLUMNS, "submitted_at", "task_id"]
    return pd.DataFrame(rows, columns=cols)


def server_pids(data_dir: str) -> list[int]:
    """Process ids of Label Studio servers started with ``--data-dir data_dir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = [a.decode(errors="replace") for a in args]
        is_ls = any(a.endswith("label-studio") for a in text) and "--data-dir" in text
        if is_ls and text[text.index("--data-dir") + 1] == data_dir:
            pids.append(int(proc.name))
    return pids


def stop_sites(sites: Sequence[ReaderSite]) -> list[str]:
    """Stop the local servers of ``sites``; returns the readers whose server was stopped.

    Only Label Studio processes started with exactly this site's data folder are signalled.
    """
    stopped = []
    for site in sites:
        pids = server_pids(site.data_dir) if site.data_dir else []
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGTERM) if os.getpgid(pid) == pid else os.kill(
                    pid, signal.SIGTERM
                )
            except ProcessLookupError:
                continue
        if pids:
            stopped.append(site.reader_id)
    return stopped
