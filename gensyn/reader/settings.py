"""The ``reader_study.server`` group's settings, declared once: how the Label Studio servers
are run and which environment variables hold the credentials.

Kept apart from :mod:`gensyn.reader.sites` (which talks to the servers over HTTP with
``requests``) so that the config schema, which every stage listing loads, imports no HTTP
client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from gensyn.base.bounds import bounded

__all__ = ["ServerMode", "ServerSettings"]


class ServerMode(StrEnum):
    """``start``: one Label Studio server per reader, started here; ``connect``: servers run by
    someone else, at the URLs given per reader."""

    start = "start"
    connect = "connect"


@dataclass
class ServerSettings:
    """Label Studio servers: started here (one per reader) or run by someone else (the
    ``reader_study.server`` group, besides where the databases live). Credentials are read
    from the environment variables named here, never from configs."""

    mode: ServerMode = ServerMode.start  # start | connect
    host: str = "127.0.0.1"  # listen address of started servers; never 0.0.0.0 unless intended
    # reader i (in `readers` order) gets base_port + i
    base_port: int = bounded(8480, ge=1, le=65535)
    urls: dict[str, str] = field(default_factory=dict)  # mode=connect: reader id -> server URL
    venv: str = ".venv-reader"  # Label Studio's own environment (scripts/setup_reader_env.sh)
    startup_timeout_s: float = bounded(300.0, gt=0)  # wait for a started server, s
    admin_email_env: str = "GENSYN_LS_ADMIN_EMAIL"  # variable holding the admin's e-mail
    admin_password_env: str = "GENSYN_LS_ADMIN_PASSWORD"  # ... the admin's password
    admin_token_env: str = "GENSYN_LS_API_TOKEN"  # mode=connect alternative to the password
    reader_password_env: str = "GENSYN_READER_{reader}_PASSWORD"  # ... each reader's password
