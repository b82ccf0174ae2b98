"""Look after a running reader study: ``python -m gensyn.reader COMMAND SITES_JSON``.

Commands (SITES_JSON is ``sites.json`` in the reader_study_serve run folder):

* ``status``  - which reader sites answer, and how many images each reader has done;
* ``start``   - start the servers that are down again from their data folders;
* ``export OUT_DIR`` - save each reader's Label Studio JSON export as ``OUT_DIR/<reader>.json``
  (a backup, and an input for ``reader_study.answers_file``);
* ``stop``    - stop the servers this study started.

Admin credentials come from GENSYN_LS_ADMIN_EMAIL / GENSYN_LS_ADMIN_PASSWORD (or
GENSYN_LS_API_TOKEN), as for the stages.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gensyn.base import io
from gensyn.base.errors import GensynError
from gensyn.reader.labelstudio import LabelStudioError
from gensyn.reader.serve import fetch_answers
from gensyn.reader.settings import ServerSettings
from gensyn.reader.sites import (
    admin_client,
    credentials_from_env,
    read_sites,
    start_server,
    stop_sites,
)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m gensyn.reader", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["status", "start", "export", "stop"])
    parser.add_argument("sites_json", type=Path)
    parser.add_argument("out_dir", type=Path, nargs="?")
    server = ServerSettings()  # the default variable names, environment and time-out
    parser.add_argument("--venv", default=server.venv)
    args = parser.parse_args(argv)
    try:
        sites = read_sites(args.sites_json)
        if args.command == "stop":
            print("stopped:", ", ".join(stop_sites(sites)) or "none")
            return 0
        creds = credentials_from_env(
            [s.reader_id for s in sites], server.admin_email_env, server.admin_password_env,
            server.reader_password_env, server.admin_token_env, need_readers=False,
        )  # fmt: skip
        for site in sites:
            if args.command == "start" and site.data_dir:
                host = site.url.split("//")[1].split(":")[0]
                start_server(site, creds, args.venv, host, server.startup_timeout_s)
            try:
                admin = admin_client(site.url, creds)
            except LabelStudioError as exc:
                print(f"{site.reader_id}: {site.url} DOWN ({exc})")
                continue
            if args.command == "export":
                if args.out_dir is None:
                    raise GensynError(
                        "export needs an output folder: python -m gensyn.reader export SITES OUT"
                    )
                tasks = admin.export(site.project_id)
                io.write_text(args.out_dir / f"{site.reader_id}.json", json.dumps(tasks, indent=1))
            done = len(fetch_answers(admin, site))
            print(f"{site.reader_id}: {site.url} up, {done} images answered")
    except (GensynError, LabelStudioError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
