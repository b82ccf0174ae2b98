"""Serve a blinded study in Label Studio: one site (server + project + account) per reader.

Why one server per reader: in Label Studio Community Edition (1.23) every member of an
organisation may read every project and every annotation, and a server has one
organisation. Readers must not see each other's answers, so each reader gets a server of
their own (own port, own database in the run folder) holding one project and one reader
account; the study coordinator's admin account exists on each. The answer key is never
uploaded anywhere.

Each reader's tasks are imported in their own seeded random order; the project uses
sequential sampling, one answer per task, no skip button, so "Label All Tasks" shows
every image exactly once. Label Studio records the time spent per image (``lead_time``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gensyn.reader.analyze import VERDICTS
from gensyn.reader.labelstudio import LabelStudioClient, LabelStudioError, signup

PROJECT_TITLE = "Real or synthetic chest X-ray?"
READER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
IMAGE_ID_RE = re.compile(r"([0-9a-f]{10})\.png$")

# One screen at 1366x768 without scrolling: the image on the left, sized to the window
# height (100vh minus Label Studio's 48 px top bar, 50 px bottom bar and margins), the
# question, "Image n of N" (from each task's data), the choices and the reason box on the
# right. The reason box is shown, and required, only once "fake" or "uncertain" is chosen.
# Keys r / f / u choose; Ctrl+Enter submits (Label Studio ignores it while typing in a box).
# The <Style> hides what a reader should not use (Label Studio 1.23 class names; the
# browser test fails if they change): the region/history side panels, the main menu and
# breadcrumbs (links to the project list and the Data Manager grid, which shows every image),
# the project Settings link, the bottom bar's task counter (a second "n of N" that is not
# the study's progress) and "Submit and exit" (which exits to the grid).
LABEL_CONFIG = """<View>
  <Style>
    .lsf-sidepanels__wrapper, [data-testid=bottombar-submit-dropdown] { display: none !important; }
    .lsf-sidepanels { padding-left: 0 !important; padding-right: 0 !important; }
    .lsf-menu-header__trigger, .lsf-breadcrumbs, .lsf-menu-header__context-item_right a,
    .lsf-current-task__task-id { visibility: hidden !important; }
  </Style>
  <View style="display: flex; gap: 32px; align-items: flex-start;">
    <View style="flex: 0 0 auto; width: calc(100vh - 80px);">
      <Image name="image" value="$image" zoom="true" zoomControl="true" brightnessControl="true"
             contrastControl="true" height="calc(100vh - 140px)" maxHeight="calc(100vh - 140px)"/>
    </View>
    <View style="flex: 1 1 320px; min-width: 300px; max-width: 520px;">
      <Header value="Image $progress" size="6"/>
      <Header value="Is this chest X-ray real or synthetic (fake)?"/>
      <Choices name="verdict" toName="image" choice="single-radio" required="true"
               requiredMessage="Choose real, fake or uncertain.">
        <Choice value="real" hotkey="r"/>
        <Choice value="fake" hotkey="f"/>
        <Choice value="uncertain" hotkey="u"/>
      </Choices>
      <View visibleWhen="choice-selected" whenTagName="verdict" whenChoiceValue="fake,uncertain">
        <Header value="What makes you think so? (required)" size="5"/>
        <TextArea name="reason" toName="image" required="true" maxSubmissions="1" editable="true"
                  showSubmitButton="false" rows="4"
                  requiredMessage="Give a reason for fake or uncertain."/>
      </View>
      <Text name="keys" value="Keys: r real, f fake, u uncertain, Ctrl+Enter submit (after typing a reason: click Submit)."/>
    </View>
  </View>
</View>"""

INSTRUCTIONS = (
    "<p>Some of these chest X-rays are real, some were made by a computer. For each image "
    "choose <b>real</b>, <b>fake</b> or <b>uncertain</b> (keys r, f, u). For fake or "
    "uncertain, write what made you think so. Then Submit: the next image comes. Every "
    "image comes once; 'Image n of N' shows how far you are. Work at your own pace; the "
    "time per image is recorded.</p>"
)

PROJECT_SETTINGS: dict[str, Any] = {
    "title": PROJECT_TITLE,
    "label_config": LABEL_CONFIG,
    "expert_instruction": INSTRUCTIONS,
    "show_instruction": False,  # readers land on the first image; the question is on the page
    "show_skip_button": False,
    "enable_empty_annotation": False,
    "show_annotation_history": False,
    "show_collab_predictions": False,
    "maximum_annotations": 1,
    "sampling": "Sequential sampling",
}


@dataclass
class ReaderSite:
    """Where one reader reads: server URL and project (no credentials)."""

    reader_id: str
    url: str
    project_id: int
    data_dir: str = ""
    port: int = 0
    pid: int = 0  # process id of a server we started (0: not ours)


def check_reader_id(reader_id: str) -> str:
    """Reader ids are short codes (R1, reader_02), never names; ValueError otherwise."""
    if not READER_ID_RE.match(reader_id):
        raise ValueError(
            f"reader id {reader_id!r} must match {READER_ID_RE.pattern} (a code such as R1, not a name)"
        )
    return reader_id


def reader_email(reader_id: str) -> str:
    """The login of a reader's account: built from the reader id only."""
    return f"{check_reader_id(reader_id).lower()}@reader.gensyn.local"


def reading_order(image_ids: Sequence[str], reader_id: str, seed: int) -> list[str]:
    """This reader's own random order of the images (seeded by study seed and reader id)."""
    salt = int.from_bytes(hashlib.sha256(reader_id.encode()).digest()[:4], "big")
    rng = np.random.default_rng([seed, salt])
    ids = sorted(image_ids)
    return [ids[i] for i in rng.permutation(len(ids))]


def ensure_project(admin: LabelStudioClient) -> int:
    """The study project on this server, with :data:`PROJECT_SETTINGS`.

    Created if absent; an existing one (a resumed serve) gets the current settings where
    they differ, so a served study picks up a newer reader page. The control names never
    change, so Label Studio accepts the new config alongside the answers already given.
    """
    for project in admin.projects():
        if project["title"] == PROJECT_TITLE:
            stale = {k: v for k, v in PROJECT_SETTINGS.items() if project.get(k) != v}
            if stale:
                admin.patch(f"/api/projects/{project['id']}", stale)
            return int(project["id"])
    return int(admin.post("/api/projects/", json=PROJECT_SETTINGS)["id"])


def import_images(admin: LabelStudioClient, project_id: int, image_paths: Sequence[Path]) -> int:
    """Upload images as tasks so that task ids follow the given order; returns the task count.

    One multipart request (Label Studio keeps the file order); if the stored order differs,
    the tasks are deleted and uploaded one request per image. Does nothing if the project
    already has tasks (a resumed serve).
    """
    existing = admin.tasks(project_id)
    if existing:
        return len(existing)
    want = [p.stem for p in image_paths]
    handles = [open(p, "rb") for p in image_paths]  # noqa: SIM115 - closed below
    try:
        files = [
            (f"file{k}", (p.name, fh, "image/png"))
            for k, (p, fh) in enumerate(zip(image_paths, handles, strict=True))
        ]
        admin.request("POST", f"/api/projects/{project_id}/import", files=files)
    finally:
        for fh in handles:
            fh.close()
    if [image_id_of(t) for t in admin.tasks(project_id)] != want:
        admin.request("DELETE", f"/api/projects/{project_id}/tasks/")
        for path in image_paths:
            with open(path, "rb") as fh:
                admin.request(
                    "POST",
                    f"/api/projects/{project_id}/import",
                    files={"file": (path.name, fh, "image/png")},
                )
    return len(admin.tasks(project_id))


def ensure_reader_account(admin: LabelStudioClient, reader_id: str, password: str) -> None:
    """Create the reader's account through the server's invitation link, unless it exists."""
    email = reader_email(reader_id)
    members = admin.get("/api/users/")
    if any(u.get("email") == email for u in members):
        return
    invite = admin.get("/api/invite")
    signup(admin.url, invite["token"], email, password)


def setup_site(
    admin: LabelStudioClient, reader_id: str, password: str, image_paths: Sequence[Path], seed: int
) -> ReaderSite:
    """Project + tasks (in this reader's order) + reader account on the admin's server."""
    by_id = {p.stem: p for p in image_paths}
    order = reading_order(list(by_id), reader_id, seed)
    project_id = ensure_project(admin)
    n = import_images(admin, project_id, [by_id[i] for i in order])
    if n != len(order):
        raise LabelStudioError(
            f"project {project_id} at {admin.url} has {n} tasks, expected {len(order)}"
        )
    add_progress(admin, project_id)
    ensure_reader_account(admin, reader_id, password)
    return ReaderSite(reader_id=reader_id, url=admin.url, project_id=project_id)


def add_progress(admin: LabelStudioClient, project_id: int) -> None:
    """Put ``progress`` = "n of N" into each task's data (tasks are read in id order)."""
    tasks = admin.tasks(project_id)
    for n, task in enumerate(tasks, start=1):
        progress = f"{n} of {len(tasks)}"
        if task["data"].get("progress") != progress:
            admin.patch(
                f"/api/tasks/{task['id']}", {"data": {**task["data"], "progress": progress}}
            )


def reader_url(site: ReaderSite) -> str:
    """Where a reader starts: the login page, which then opens the project's labelling stream.

    ``next`` (Label Studio's post-login redirect) points at the Data Manager URL with
    ``labeling=1``, which Label Studio 1.23 opens straight in the label stream: the first
    unanswered image, never the grid of all images.
    """
    return f"{site.url}/user/login/?next=/projects/{site.project_id}/data%3Flabeling%3D1"


def image_id_of(task: Mapping[str, Any]) -> str:
    """Our image id from a task's image URL (``.../<upload prefix>-<image id>.png``)."""
    match = IMAGE_ID_RE.search(str(task["data"].get("image", "")))
    if not match:
        raise LabelStudioError(f"task {task.get('id')} has no GENSYN image id in {task['data']!r}")
    return match.group(1)


def parse_result(result: Sequence[Mapping[str, Any]]) -> tuple[str | None, str]:
    """(verdict, reason) from an annotation's result list."""
    verdict, reason = None, ""
    for item in result:
        value = item.get("value", {})
        if item.get("from_name") == "verdict" and value.get("choices"):
            verdict = str(value["choices"][0])
        elif item.get("from_name") == "reason" and value.get("text"):
            reason = " ".join(str(t) for t in value["text"]).strip()
    return verdict, reason


def answers_from_tasks(
    tasks: Sequence[Mapping[str, Any]], reader_id: str, reader_user_id: int | None = None
) -> list[dict[str, Any]]:
    """One row per answered image from tasks with annotations (API list or JSON export).

    Skipped/cancelled annotations are ignored; only annotations by ``reader_user_id`` count
    when it is given (an admin's test annotation is not an answer). If a reader answered an
    image twice, the latest answer counts.
    """
    rows: dict[str, dict[str, Any]] = {}
    for task in tasks:
        image_id = image_id_of(task)
        for ann in task.get("annotations", []):
            if ann.get("was_cancelled"):
                continue
            author = ann.get("completed_by")
            author_id = author.get("id") if isinstance(author, dict) else author
            if reader_user_id is not None and author_id != reader_user_id:
                continue
            verdict, reason = parse_result(ann.get("result", []))
            if verdict is None:
                continue
            row = {
                "reader_id": reader_id,
                "image_id": image_id,
                "verdict": verdict,
                "reason": reason,
                "lead_time_s": float(ann.get("lead_time") or np.nan),
                "submitted_at": str(ann.get("updated_at") or ann.get("created_at") or ""),
                "task_id": int(task["id"]),
            }
            old = rows.get(image_id)
            if old is None or row["submitted_at"] >= old["submitted_at"]:
                rows[image_id] = row
    return sorted(rows.values(), key=lambda r: r["image_id"])


def fetch_answers(admin: LabelStudioClient, site: ReaderSite) -> list[dict[str, Any]]:
    """The reader's answers on ``site`` (pulled with the admin account)."""
    email = reader_email(site.reader_id)
    users = [u for u in admin.get("/api/users/") if u.get("email") == email]
    if not users:
        raise LabelStudioError(f"no account {email} for reader {site.reader_id} at {site.url}")
    return answers_from_tasks(admin.tasks(site.project_id), site.reader_id, int(users[0]["id"]))


def submit_answer(
    reader: LabelStudioClient,
    task_id: int,
    verdict: str,
    reason: str = "",
    lead_time_s: float = 0.0,
) -> dict[str, Any]:
    """Submit one answer through the API as a reader would (for tests and scripted studies)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    result: list[dict[str, Any]] = [
        {
            "from_name": "verdict",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": [verdict]},
        }
    ]
    if reason:
        result.append(
            {
                "from_name": "reason",
                "to_name": "image",
                "type": "textarea",
                "value": {"text": [reason]},
            }
        )
    body = {"result": result, "lead_time": lead_time_s, "was_cancelled": False}
    return dict(reader.post(f"/api/tasks/{task_id}/annotations/", json=body))


def site_records(sites: Sequence[ReaderSite]) -> list[dict[str, Any]]:
    """Sites as plain dicts (for ``sites.json``)."""
    return [asdict(s) for s in sites]
