"""Label Studio from our process: start/stop a server, and a small REST client.

Label Studio lives in its own virtual environment (``.venv-reader``, made by
``scripts/setup_reader_env.sh``) because its pinned dependencies clash with ours; we never
import it, we run its ``label-studio`` command and talk to it over HTTP with ``requests``.

Authentication (Label Studio 1.23): the browser and our reader/admin sessions log in with
email and password through the login form (Django session cookie + CSRF token). For a
server someone else runs, an API token also works: a personal access token (a JWT refresh
token, exchanged at ``/api/token/refresh/`` for a short-lived access token sent as
``Bearer``) or, where the organisation enabled them, a legacy token (``Token``).

Servers we start listen on 127.0.0.1 only and are configured to send nothing anywhere:
no error reports (Sentry), no version check, no usage analytics, no sign-up without an
invitation link.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from gensyn.base.errors import GensynError

DEFAULT_VENV = ".venv-reader"
HEALTH_PATH = "/health"
SETUP_HINT = "run `bash scripts/setup_reader_env.sh` to create .venv-reader with Label Studio"


class LabelStudioError(GensynError):
    """A Label Studio server could not be started, reached or used."""


def label_studio_executable(venv_dir: str | os.PathLike[str] = DEFAULT_VENV) -> Path:
    """Path of ``label-studio`` in ``venv_dir`` (relative: to the repository root); error if missing."""
    venv = Path(venv_dir)
    if not venv.is_absolute():  # relative to the repository, not to the working directory
        venv = Path(__file__).resolve().parents[2] / venv
    exe = venv / "bin" / "label-studio"
    if not exe.is_file():
        raise LabelStudioError(f"Label Studio not found at {exe}; {SETUP_HINT}")
    return exe


def private_env(data_dir: Path) -> dict[str, str]:
    """Environment for a Label Studio process: its data in ``data_dir``, nothing sent out."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "VIRTUAL_ENV"))
    }
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "HOME": str(data_dir),  # nothing of Label Studio lands in the user's home
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LOCAL_FILES_SERVING_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) != 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (chosen by the OS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def prepare_database_template(executable: Path, template_dir: Path, timeout_s: float = 600) -> Path:
    """Create (once) an empty, fully migrated Label Studio database in ``template_dir``.

    Migrating a fresh database takes most of Label Studio's ~30 s first start; copying this
    template into a new server's data folder brings that start down to seconds.
    """
    db = template_dir / "label_studio.sqlite3"
    if db.is_file():
        return db
    work = template_dir.with_name(f"{template_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    proc = subprocess.run(
        [str(executable), "version", "--data-dir", str(work)],
        env=private_env(work),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0 or not (work / db.name).is_file():
        tail = (proc.stdout + proc.stderr)[-2000:]
        shutil.rmtree(work, ignore_errors=True)
        raise LabelStudioError(f"migrating a Label Studio database in {work} failed:\n{tail}")
    template_dir.mkdir(parents=True, exist_ok=True)
    os.replace(work / db.name, db)  # atomic: a template is either complete or absent
    shutil.rmtree(work, ignore_errors=True)
    return db


@dataclass
class LabelStudioServer:
    """One Label Studio server process with its own data folder (database + uploads)."""

    data_dir: Path
    port: int
    admin_email: str
    admin_password: str = field(repr=False)
    host: str = "127.0.0.1"
    venv_dir: Path = Path(DEFAULT_VENV)
    template_db: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_offset: int = field(default=0, repr=False)  # where this start's output begins

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8480``."""
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where the server's output goes."""
        return self.data_dir / "server.log"

    def start(self, timeout_s: float = 180.0) -> None:
        """Start the server and wait until it answers; LabelStudioError with its log otherwise."""
        exe = label_studio_executable(self.venv_dir)
        if not port_is_free(self.port, self.host):
            raise LabelStudioError(
                f"port {self.port} on {self.host} is in use; choose another port"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        db = self.data_dir / "label_studio.sqlite3"
        if self.template_db is not None and not db.exists():
            db.write_bytes(self.template_db.read_bytes())
        env = private_env(self.data_dir)
        # the admin account is created on first start (and left alone on later starts)
        env["LABEL_STUDIO_USERNAME"] = self.admin_email
        env["LABEL_STUDIO_PASSWORD"] = self.admin_password
        cmd = [
            str(exe),
            "start",
            "--no-browser",
            "--internal-host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                cmd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() ends it and its children
            )
        self.wait_healthy(timeout_s)

    def wait_healthy(self, timeout_s: float) -> None:
        """Poll ``/health`` until it answers 200, the process dies, or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LabelStudioError(
                    f"Label Studio exited with code {self.process.returncode}; log {self.log_path}:\n"
                    + self._log_tail()
                )
            # Label Studio silently moves to the next port if ours was taken meanwhile: make
            # sure the server answering is the one we started
            if self.is_healthy() and self._listening_line() in self._log_since_start():
                return
            time.sleep(0.5)
        self.stop()
        raise LabelStudioError(
            f"Label Studio did not answer on {self.url} within {timeout_s:.0f} s:\n{self._log_tail()}"
        )

    def _listening_line(self) -> str:
        return f"Starting development server at http://{self.host}:{self.port}/"

    def is_healthy(self) -> bool:
        """True if the server answers ``/health`` with 200."""
        try:
            return requests.get(self.url + HEALTH_PATH, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def _log_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def _log_tail(self, n_chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the server gracefully (SIGTERM to its process group, SIGKILL after ``timeout_s``)."""
        self._signal(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash or power cut would."""
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: signal.Signals, timeout_s: float) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


class LabelStudioClient:
    """A logged-in connection to one Label Studio server (session or token auth)."""

    def __init__(self, url: str, session: requests.Session, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.session = session
        self.timeout_s = timeout_s
        self._refresh_token: str | None = None

    @classmethod
    def login(
        cls, url: str, email: str, password: str, timeout_s: float = 60.0
    ) -> LabelStudioClient:
        """Log in through the login form, as a browser does; LabelStudioError if refused."""
        url = url.rstrip("/")
        session = requests.Session()
        try:
            session.get(url + "/user/login/", timeout=timeout_s)
            csrf = session.cookies.get("csrftoken", "")
            session.post(
                url + "/user/login/",
                data={"email": email, "password": password, "csrfmiddlewaretoken": csrf},
                headers={"Referer": url + "/user/login/"},
                timeout=timeout_s,
            )
        except requests.RequestException as exc:
            raise LabelStudioError(f"cannot reach Label Studio at {url}: {exc}") from exc
        client = cls(url, session, timeout_s)
        if not client.is_authenticated():
            raise LabelStudioError(
                f"Label Studio at {url} refused the login of {email} (wrong password?)"
            )
        return client

    @classmethod
    def with_token(cls, url: str, token: str, timeout_s: float = 60.0) -> LabelStudioClient:
        """Authenticate with an API token: a personal access token (JWT) or a legacy token."""
        client = cls(url, requests.Session(), timeout_s)
        if token.count(".") == 2:  # a JWT: personal access (refresh) token
            client._refresh_token = token
            client._refresh_access()
        else:
            client.session.headers["Authorization"] = f"Token {token}"
        if not client.is_authenticated():
            raise LabelStudioError(
                f"Label Studio at {url} refused the API token (expired, or legacy tokens off?)"
            )
        return client

    def _refresh_access(self) -> None:
        resp = self.session.post(
            self.url + "/api/token/refresh/",
            json={"refresh": self._refresh_token},
            timeout=self.timeout_s,
        )
        if resp.status_code != 200:
            raise LabelStudioError(
                f"Label Studio refused the personal access token ({resp.status_code})"
            )
        self.session.headers["Authorization"] = f"Bearer {resp.json()['access']}"

    def is_authenticated(self) -> bool:
        """True if the server accepts our credentials."""
        try:
            resp = self.session.get(self.url + "/api/current-user/whoami", timeout=self.timeout_s)
        except requests.RequestException:
            return False
        return resp.status_code == 200

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One API call; LabelStudioError naming the call and the server's answer on failure."""
        headers = dict(kwargs.pop("headers", {}) or {})
        csrf = self.session.cookies.get("csrftoken")
        if csrf and method.upper() not in ("GET", "HEAD", "OPTIONS"):
            headers["X-CSRFToken"] = csrf
            headers["Referer"] = self.url + "/"
        kwargs.setdefault("timeout", self.timeout_s)
        resp = self.session.request(method, self.url + path, headers=headers, **kwargs)
        if resp.status_code == 401 and self._refresh_token:  # access token expired: renew once
            self._refresh_access()
            resp = self.session.request(method, self.url + path, headers=headers, **kwargs)
        if resp.status_code >= 400:
            raise LabelStudioError(
                f"{method} {self.url}{path} -> {resp.status_code}: {resp.text[:500]}"
            )
        return resp

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET ``path`` and return the decoded JSON."""
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """POST JSON to ``path`` and return the decoded JSON answer (None if empty)."""
        resp = self.request("POST", path, json=json, **kwargs)
        return resp.json() if resp.content else None

    def patch(self, path: str, json: Any) -> Any:
        """PATCH JSON to ``path`` and return the decoded JSON answer."""
        return self.request("PATCH", path, json=json).json()

    def whoami(self) -> dict[str, Any]:
        """The logged-in user (id, email, ...)."""
        return dict(self.get("/api/current-user/whoami"))

    def projects(self) -> list[dict[str, Any]]:
        """Every project this user can see."""
        data = self.get("/api/projects/", params={"page_size": 1000})
        return list(data["results"] if isinstance(data, dict) else data)

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of a project, with its annotations, in id order."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            data = self.get(
                "/api/tasks/",
                params={"project": project_id, "page": page, "page_size": 500, "fields": "all"},
            )
            out += data["tasks"]
            if len(out) >= data.get("total", 0) or not data["tasks"]:
                return sorted(out, key=lambda t: t["id"])
            page += 1

    def export(self, project_id: int) -> list[dict[str, Any]]:
        """The project's tasks with their annotations in Label Studio's JSON export format."""
        return list(self.get(f"/api/projects/{project_id}/export", params={"exportType": "JSON"}))


def signup(url: str, invite_token: str, email: str, password: str, timeout_s: float = 60.0) -> None:
    """Create an account through the invitation link (the only sign-up our servers allow)."""
    url = url.rstrip("/")
    session = requests.Session()
    page = f"{url}/user/signup/?token={invite_token}"
    session.get(page, timeout=timeout_s)
    csrf = session.cookies.get("csrftoken", "")
    resp = session.post(
        page,
        data={"email": email, "password": password, "csrfmiddlewaretoken": csrf},
        headers={"Referer": page},
        timeout=timeout_s,
    )
    if resp.status_code >= 400 or "/user/signup" in resp.url:
        raise LabelStudioError(
            f"signing up {email} at {url} failed ({resp.status_code}); passwords need >= 8 characters "
            "and must not be too common"
        )
