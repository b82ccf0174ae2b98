"""A real Label Studio study: 60 images, three concurrent readers, a crash, the analysis.

Real servers (from .venv-reader) on 127.0.0.1, started once for the module. Skipped only
when .venv-reader is missing outside CI; in CI (CI=true) that is a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa
from statsmodels.stats.proportion import proportion_confint

from gensyn.reader.analyze import analyze
from gensyn.reader.blinding import BlindingParams
from gensyn.reader.build import Source, build_study
from gensyn.reader.labelstudio import (
    LabelStudioClient,
    LabelStudioError,
    LabelStudioServer,
    free_port,
    prepare_database_template,
)
from gensyn.reader.serve import (
    ReaderSite,
    fetch_answers,
    image_id_of,
    reader_email,
    reader_url,
    reading_order,
    setup_site,
    submit_answer,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-reader"
ADMIN = ("admin@gensyn.local", "Adm1n-Study-Pass")
READERS = ("R1", "R2", "R3")
PASSWORDS = {r: f"Reader-{r}-pass-42" for r in (*READERS, "B1", "B2")}
SOURCES = [("xray_a", "real"), ("xray_b", "real"), ("xray_c", "real"),
           ("drr_centre", "fake"), ("drr_angled", "fake"), ("synthex", "fake")]  # fmt: skip


def _require_label_studio() -> Path:
    exe = VENV / "bin" / "label-studio"
    if not exe.is_file():
        msg = f"{exe} missing: run `bash scripts/setup_reader_env.sh`"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI must provide Label Studio: " + msg)
        pytest.skip(msg)
    return exe


def _make_sources(root: Path) -> list[Source]:
    """6 folders × 10 smooth random images, each source in its own size/bit depth."""
    rng = np.random.default_rng(11)
    out = []
    for k, (name, truth) in enumerate(SOURCES):
        folder = root / name
        folder.mkdir(parents=True)
        h, w = 80 + 8 * k, 96 - 4 * k
        for i in range(10):
            field = rng.random((h // 8, w // 8))
            img = np.asarray(Image.fromarray((field * 255).astype(np.uint8)).resize((w, h)), float)
            pix = (img / 255 * (65535 if k % 2 else 255)).astype(np.uint16 if k % 2 else np.uint8)
            Image.fromarray(pix).save(folder / f"{name}_{i:02d}.png")
        out.append(Source(name, truth, folder, "*.png"))
    return out


@dataclass
class Study:
    key: pd.DataFrame
    images: list[Path]
    sites: dict[str, ReaderSite]
    servers: dict[str, LabelStudioServer]
    template: Path
    root: Path


@pytest.fixture(scope="session")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Study]:
    exe = _require_label_studio()
    root = tmp_path_factory.mktemp("reader_study")
    key = build_study(_make_sources(root / "src"), 10, root / "study", seed=5,
                      params=BlindingParams(image_size_px=96),
                      force=True)  # noise sources; the audit: test_reader_build  # fmt: skip
    images = sorted((root / "study" / "images").glob("*.png"))
    template = prepare_database_template(exe, VENV / "gensyn-db-template")
    servers: dict[str, LabelStudioServer] = {}
    sites = {}
    try:
        for reader in READERS:
            server = LabelStudioServer(root / "ls" / reader, free_port(), *ADMIN, venv_dir=VENV,
                                       template_db=template)  # fmt: skip
            servers[reader] = server
            server.start(timeout_s=300)
            admin = LabelStudioClient.login(server.url, *ADMIN)
            sites[reader] = setup_site(admin, reader, PASSWORDS[reader], images, seed=5)
        yield Study(key, images, sites, servers, template, root)
    finally:
        for server in servers.values():
            server.stop()


def planted_answers(key: pd.DataFrame) -> dict[str, dict[str, tuple[str, str, float]]]:
    """Per reader: image id -> (verdict, reason, seconds). R1 59/60, R2 59/60, R3 52/60 correct
    (counting 'uncertain' as wrong), as the three radiologists of the original study."""
    ids = sorted(key["image_id"])
    truth = dict(zip(key["image_id"], key["truth"], strict=True))
    fakes = [i for i in ids if truth[i] == "fake"]
    reals = [i for i in ids if truth[i] == "real"]
    plan: dict[str, dict[str, tuple[str, str, float]]] = {}
    deviations = {
        "R1": {fakes[0]: "real"},
        "R2": {reals[0]: "uncertain"},
        "R3": {fakes[1]: "real", fakes[2]: "real", fakes[3]: "real", fakes[4]: "real",
               reals[1]: "fake", reals[2]: "fake", reals[3]: "uncertain", fakes[5]: "uncertain"},
    }  # fmt: skip
    for r, reader in enumerate(READERS):
        plan[reader] = {}
        for j, image_id in enumerate(ids):
            verdict = deviations[reader].get(image_id, truth[image_id])
            reason = f"{reader} saw something odd in {image_id}" if verdict != "real" else ""
            plan[reader][image_id] = (verdict, reason, 3.0 + r + (j % 7) * 1.5)
    return plan


def _read_all(study: Study, reader: str, plan: dict[str, tuple[str, str, float]],
              pause_after: int | None = None, paused: threading.Event | None = None,
              resume: threading.Event | None = None, served: list[str] | None = None) -> None:  # fmt: skip
    """A simulated reader: take the next task, answer as planned, until all are answered."""
    site = study.sites[reader]
    client = LabelStudioClient.login(site.url, reader_email(reader), PASSWORDS[reader])
    for n in range(len(plan)):
        if pause_after is not None and n == pause_after and paused and resume:
            paused.set()
            assert resume.wait(240), "the test never restarted the server"
            client = LabelStudioClient.login(site.url, reader_email(reader), PASSWORDS[reader])
        task = client.get(f"/api/projects/{site.project_id}/next/")
        image_id = image_id_of(task)
        if served is not None:
            served.append(image_id)
        verdict, reason, seconds = plan[image_id]
        submit_answer(client, task["id"], verdict, reason, seconds)


def _answers(study: Study, reader: str) -> list[dict[str, Any]]:
    admin = LabelStudioClient.login(study.sites[reader].url, *ADMIN)
    return fetch_answers(admin, study.sites[reader])


def test_three_readers_concurrently_with_a_crash_and_the_analysis(study: Study) -> None:
    plan = planted_answers(study.key)
    paused, resume = threading.Event(), threading.Event()
    served: dict[str, list[str]] = {r: [] for r in READERS}
    errors: list[BaseException] = []

    def reader_thread(reader: str) -> None:
        try:
            kwargs = (
                {"pause_after": 30, "paused": paused, "resume": resume} if reader == "R2" else {}
            )
            _read_all(study, reader, plan[reader], served=served[reader], **kwargs)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
            paused.set()

    threads = [threading.Thread(target=reader_thread, args=(r,)) for r in READERS]
    for t in threads:
        t.start()
    # Mid-study crash: kill R2's server (SIGKILL) after 30 answers, restart it, nothing lost.
    assert paused.wait(240)
    assert not errors, errors
    before = _answers(study, "R2")
    assert len(before) == 30
    server = study.servers["R2"]
    server.kill()
    assert not server.is_healthy()
    server.start(timeout_s=300)
    after = _answers(study, "R2")
    assert after == before
    resume.set()
    for t in threads:
        t.join(300)
    assert not errors, errors

    # every reader saw every image exactly once, in their own shuffled order
    ids = sorted(study.key["image_id"])
    for reader in READERS:
        assert sorted(served[reader]) == ids
        assert served[reader] == reading_order(ids, reader, seed=5)
    assert served["R1"] != served["R2"]

    rows = [row for reader in READERS for row in _answers(study, reader)]
    answers = pd.DataFrame(rows)
    for row in rows:  # verdicts, reasons and time per image arrive unchanged
        assert (row["verdict"], row["reason"], row["lead_time_s"]) == plan[row["reader_id"]][
            row["image_id"]
        ]
    res = analyze(answers, study.key, uncertain_as="wrong", readers=list(READERS))

    # hand counts from the plan (uncertain = wrong)
    truth = dict(zip(study.key["image_id"], study.key["truth"], strict=True))
    source = dict(zip(study.key["image_id"], study.key["source"], strict=True))
    correct = {r: sum(plan[r][i][0] == truth[i] for i in ids) for r in READERS}
    assert correct == {"R1": 59, "R2": 59, "R3": 52}
    readers = res.readers.set_index("reader_id")
    for r in READERS:
        assert readers.loc[r, "accuracy_k"] == correct[r] and readers.loc[r, "accuracy_n"] == 60
        lo, hi = proportion_confint(correct[r], 60, alpha=0.05, method="wilson")
        assert readers.loc[r, "accuracy_ci_low"] == pytest.approx(lo)
        assert readers.loc[r, "accuracy_ci_high"] == pytest.approx(hi)
    fakes_called = sum(plan[r][i][0] == "fake" for r in READERS for i in ids if truth[i] == "fake")
    reals_called = sum(plan[r][i][0] == "real" for r in READERS for i in ids if truth[i] == "real")
    assert (res.overall["sensitivity_k"], res.overall["sensitivity_n"]) == (fakes_called, 90)
    assert (res.overall["specificity_k"], res.overall["specificity_n"]) == (reals_called, 90)
    assert res.overall["accuracy_k"] == 170
    by_source = res.sources.set_index("source")
    for name, _ in SOURCES:
        hand = sum(plan[r][i][0] == truth[i] for r in READERS for i in ids if source[i] == name)
        assert by_source.loc[name, "accuracy_k"] == hand and by_source.loc[name, "accuracy_n"] == 30
    votes = np.array(
        [[["real", "fake", "uncertain"].index(plan[r][i][0]) for r in READERS] for i in ids]
    )
    table, _ = aggregate_raters(votes, n_cat=3)
    assert res.agreement["fleiss_kappa"] == pytest.approx(sm_fleiss_kappa(table, method="fleiss"))
    times = [plan["R3"][i][2] for i in ids]
    assert res.time_by_reader.set_index("reader_id").loc["R3", "median_s"] == pytest.approx(
        np.median(times)
    )
    n_reasons = sum(plan[r][i][1] != "" for r in READERS for i in ids)
    assert len(res.reasons) == n_reasons and set(res.reasons["source"]) <= {s for s, _ in SOURCES}


def test_reader_cannot_see_key_or_other_readers(study: Study) -> None:
    r1 = study.sites["R1"]
    reader = LabelStudioClient.login(r1.url, reader_email("R1"), PASSWORDS["R1"])
    me = reader.whoami()["id"]
    projects = reader.projects()
    assert [p["id"] for p in projects] == [r1.project_id]  # only their own study on their server
    seen = json.dumps([projects, reader.tasks(r1.project_id), reader.get("/api/users/")])
    for task in reader.tasks(r1.project_id):
        assert set(task["data"]) == {"image", "progress"}
        assert all(a["completed_by"] == me for a in task.get("annotations", []))
    # nothing that names a source or the key reaches the reader, nor sits in the server's data
    secrets = [name for name, _ in SOURCES] + ["answer_key", "original_path"]
    assert not any(s in seen for s in secrets)
    for reader_id, server in study.servers.items():
        db = (server.data_dir / "label_studio.sqlite3").read_bytes()
        assert not any(s.encode() in db for s in secrets), reader_id
        media = [p.name for p in server.data_dir.rglob("*") if p.is_file()]
        assert not any("answer_key" in m for m in media)
    # R1's account does not exist on the other readers' servers
    for other in ("R2", "R3"):
        with pytest.raises(LabelStudioError, match="refused the login"):
            LabelStudioClient.login(study.sites[other].url, reader_email("R1"), PASSWORDS["R1"])
    # no anonymous access to images, no sign-up without the invitation link
    image_url = r1.url + reader.tasks(r1.project_id)[0]["data"]["image"]
    anon = requests.get(image_url, timeout=30, allow_redirects=False)
    assert anon.status_code in (301, 302, 401, 403)
    session = requests.Session()
    session.get(r1.url + "/user/signup/", timeout=30)
    signup = session.post(r1.url + "/user/signup/", timeout=30, data={
        "email": "intruder@example.org", "password": "Intruder-pass-1",
        "csrfmiddlewaretoken": session.cookies.get("csrftoken", "")})  # fmt: skip
    assert signup.status_code == 403


def test_servers_listen_on_loopback_only(study: Study) -> None:
    import psutil

    pids = {s.process.pid for s in study.servers.values() if s.process}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid is not None:
            try:
                group = os.getpgid(conn.pid)
            except ProcessLookupError:
                continue
            if group in pids:
                assert conn.laddr.ip == "127.0.0.1", conn


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def _require_chromium() -> None:
    if not CHROMIUM.is_file():
        msg = "Debian chromium missing: run `bash scripts/setup_reader_env.sh`"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)


def test_browser_reader_marks_fake_and_must_give_a_reason(study: Study, tmp_path: Path) -> None:
    """Headless Chromium: log in, choose fake -> reason box appears and is required -> stored."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    server = LabelStudioServer(
        tmp_path / "ls", free_port(), *ADMIN, venv_dir=VENV, template_db=study.template
    )
    server.start(timeout_s=300)
    try:
        admin = LabelStudioClient.login(server.url, *ADMIN)
        site = setup_site(admin, "B1", PASSWORDS["B1"], study.images[:3], seed=5)
        first, second = [image_id_of(t) for t in admin.tasks(site.project_id)][:2]
        outside: list[str] = []

        def only_local(route: Any) -> None:  # the study page must need nothing from outside
            if route.request.url.startswith(server.url):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
                args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 900},
            )  # fmt: skip
            try:
                browser.route("**/*", only_local)
                page = browser.new_page()
                page.goto(server.url + "/user/login/")
                page.fill("input[name=email]", reader_email("B1"))
                page.fill("input[name=password]", PASSWORDS["B1"])
                page.click("button[type=submit]")
                page.wait_for_load_state("networkidle")
                page.goto(f"{server.url}/projects/{site.project_id}/data?labeling=1")
                # progress, no instructions pop-up
                page.get_by_text("Image 1 of 3", exact=True).wait_for(timeout=60_000)
                reason = page.locator("textarea[name=reason]")
                submit = page.get_by_test_id("bottombar-submit-button")
                page.locator("input[name=real]").wait_for(timeout=60_000)
                assert not reason.is_visible()
                page.locator("input[name=fake]").click()
                reason.wait_for(state="visible")  # the reason box appears for "fake"
                submit.click()  # ... and is required: Label Studio refuses to submit
                page.get_by_text("Give a reason for fake or uncertain.").wait_for()
                page.get_by_role("button", name="OK").click()
                assert fetch_answers(admin, site) == []
                reason.fill("rib edges too sharp")
                page.wait_for_timeout(1500)  # some reading time
                submit.click()
                page.get_by_text("Annotation saved successfully", exact=True).first.wait_for()
                # next image: "real" hides the reason box and needs no reason
                page.locator("input[name=real]").click()
                assert not reason.is_visible()
                submit.click()
                for _ in range(120):  # wait until the second answer is stored
                    if len(fetch_answers(admin, site)) == 2:
                        break
                    page.wait_for_timeout(500)
            finally:
                browser.close()
        answers = {a["image_id"]: a for a in fetch_answers(admin, site)}
        assert answers[first]["verdict"] == "fake"
        assert answers[first]["reason"] == "rib edges too sharp"
        assert answers[first]["lead_time_s"] > 1.0  # Label Studio timed the reading
        assert answers[second]["verdict"] == "real" and answers[second]["reason"] == ""
        assert outside == [], f"the page tried to reach outside hosts: {outside}"
    finally:
        server.stop()


def _screenshots_script() -> Any:
    """scripts/reader_screenshots.py: the reader's steps, shared with the docs' screenshots."""
    spec = importlib.util.spec_from_file_location(
        "reader_screenshots", ROOT / "scripts" / "reader_screenshots.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reader_page_fits_a_1366x768_screen(study: Study, tmp_path: Path) -> None:
    """The printed URL at 1366x768: login, then the first of 60 images with the question,
    choices and (after f) the reason box, all without scrolling; no grid, menu or panels."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    shots = _screenshots_script()
    width, height = shots.VIEWPORT["width"], shots.VIEWPORT["height"]
    server = LabelStudioServer(
        tmp_path / "ls", free_port(), *ADMIN, venv_dir=VENV, template_db=study.template
    )
    server.start(timeout_s=300)
    try:
        admin = LabelStudioClient.login(server.url, *ADMIN)
        site = setup_site(admin, "B2", PASSWORDS["B2"], study.images, seed=5)
        first, second = [image_id_of(t) for t in admin.tasks(site.project_id)][:2]

        def in_window(locator: Any) -> None:
            box = locator.bounding_box()
            assert box is not None, locator
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, (locator, box)
            assert box["y"] >= 0 and box["y"] + box["height"] <= height, (locator, box)

        def shown(text: str) -> int:
            return page.get_by_text(text, exact=True).filter(visible=True).count()

        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
            )
            try:
                page = browser.new_page(viewport=shots.VIEWPORT)
                shots.open_first_image(page, reader_url(site), reader_email("B2"), PASSWORDS["B2"])
                assert page.url.startswith(f"{server.url}/projects/{site.project_id}/data?")
                assert "labeling=1" in page.url  # the label stream, not the Data Manager grid
                in_window(shots.study_image(page))
                box = shots.study_image(page).bounding_box()
                assert box["height"] >= 0.7 * height  # the image fills the window's height
                in_window(page.get_by_text("Is this chest X-ray real or synthetic (fake)?"))
                in_window(page.get_by_text("Image 1 of 60", exact=True))
                for verdict in ("real", "fake", "uncertain"):
                    in_window(page.locator(f"input[name={verdict}]"))
                in_window(page.get_by_test_id("bottombar-submit-button"))
                assert page.locator(".lsf-table").filter(visible=True).count() == 0  # no grid
                for text in ("Create Project", "Label All Tasks", "Projects", "Settings"):
                    assert shown(text) == 0, text
                # Label Studio renders its region/history panels; the labelling config hides them
                for text in ("Regions", "Relations", "History", "Info"):
                    assert page.get_by_text(text, exact=True).count() >= 1, text
                    assert shown(text) == 0, text
                assert page.get_by_test_id("bottombar-submit-dropdown").is_hidden()  # no exit

                reason = page.locator("textarea[name=reason]")
                assert reason.is_hidden()
                shots.press_fake(page)  # the f key chooses fake and shows the reason box
                assert page.locator("input[name=fake]").is_checked()
                in_window(reason)
                in_window(page.get_by_text("What makes you think so? (required)"))
                in_window(page.get_by_test_id("bottombar-submit-button"))
                for name in ("question", "reason"):  # small enough for the docs
                    png = shots.save_png(page, tmp_path / f"{name}.png")
                    assert 0 < png.stat().st_size <= shots.MAX_PNG_BYTES
                    assert Image.open(png).size == (1024, 576)

                reason.fill("too smooth")
                page.get_by_test_id("bottombar-submit-button").click()
                page.get_by_text("Image 2 of 60", exact=True).wait_for(timeout=60_000)
                page.wait_for_timeout(shots.HOTKEYS_READY_MS)
                page.keyboard.press("r")  # real needs no reason; Ctrl+Enter submits
                assert page.locator("input[name=real]").is_checked() and reason.is_hidden()
                page.keyboard.press("Control+Enter")
                page.get_by_text("Image 3 of 60", exact=True).wait_for(timeout=60_000)
            finally:
                browser.close()
        answers = {a["image_id"]: a for a in fetch_answers(admin, site)}
        assert (answers[first]["verdict"], answers[first]["reason"]) == ("fake", "too smooth")
        assert (answers[second]["verdict"], answers[second]["reason"]) == ("real", "")
    finally:
        server.stop()


def test_api_tokens_personal_access_token_works_legacy_is_off(study: Study) -> None:
    """Label Studio 1.23: personal access tokens (JWT) work; legacy tokens are off by default."""
    url = study.sites["R3"].url
    admin = LabelStudioClient.login(url, *ADMIN)
    assert admin.get("/api/token/") == []  # a fresh server: the admin has no token yet
    pat = admin.post("/api/token/")["token"]
    by_token = LabelStudioClient.with_token(url, pat)
    assert [p["id"] for p in by_token.projects()] == [study.sites["R3"].project_id]
    assert by_token.whoami()["email"] == ADMIN[0]
    legacy = admin.get("/api/current-user/token")["token"]
    with pytest.raises(LabelStudioError, match="refused the API token"):
        LabelStudioClient.with_token(url, legacy)
    with pytest.raises(LabelStudioError):
        LabelStudioClient.with_token(url, pat[:-4] + "abcd")
