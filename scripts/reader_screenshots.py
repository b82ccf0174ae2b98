"""Screenshots of the reader page at 1366x768 for docs/reader_study.md (docs/img/reader_*.png).

    python scripts/reader_screenshots.py workdir/runs/reader_study_build/<hash>/images

Starts a throw-away Label Studio server (from .venv-reader, on a free port, data in a
temporary folder, a random admin password), sets up one reader's site as
``reader_study_serve`` does, logs in through the URL it prints for that reader, and saves
the page as the reader first sees it (``reader_question.png``) and after pressing f, when
the reason box shows (``reader_reason.png``). tests/test_reader_labelstudio.py walks the
same steps with the functions below and checks that everything fits the window.
"""

from __future__ import annotations

import argparse
import io
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gensyn.reader.labelstudio import (  # noqa: E402
    LabelStudioClient,
    LabelStudioServer,
    free_port,
    label_studio_executable,
    prepare_database_template,
)
from gensyn.reader.serve import reader_email, reader_url, setup_site  # noqa: E402

VIEWPORT = {"width": 1366, "height": 768}  # the smallest common laptop / PACS side screen
CHROMIUM = Path("/usr/bin/chromium")  # Debian's, from scripts/setup_reader_env.sh
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
HOTKEYS_READY_MS = 1500  # Label Studio binds r/f/u a moment after it draws a task
MAX_PNG_BYTES = 200_000


def study_image(page: Any) -> Any:
    """The X-ray on the page (Label Studio draws it as ``<img alt="image">``)."""
    return page.locator("img[alt=image]")


def open_first_image(
    page: Any, login_url: str, email: str, password: str, timeout_ms: int = 60_000
) -> None:
    """Log in at ``login_url`` (as a reader would) and wait until the first image is ready.

    ``page`` is a Playwright page; returns once the image has loaded and the hotkeys work.
    """
    page.goto(login_url)
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.get_by_text("Is this chest X-ray real or synthetic (fake)?").wait_for(timeout=timeout_ms)
    page.wait_for_function(
        "() => { const i = document.querySelector('img[alt=image]');"
        " return i !== null && i.complete && i.naturalWidth > 0; }",
        timeout=timeout_ms,
    )
    page.wait_for_timeout(HOTKEYS_READY_MS)


def press_fake(page: Any, timeout_ms: int = 30_000) -> None:
    """Press f (fake) and wait for the reason box."""
    page.keyboard.press("f")
    page.locator("textarea[name=reason]").wait_for(state="visible", timeout=timeout_ms)


def save_png(page: Any, path: Path, width_px: int = 1024, colours: int = 128) -> Path:
    """Screenshot ``page``, shrink it to ``width_px`` and a ``colours`` palette, save to ``path``."""
    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    height_px = round(shot.height * width_px / shot.width)
    small = shot.resize((width_px, height_px), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    small.quantize(colours, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def capture(images_dir: Path, out_dir: Path, venv: Path = ROOT / ".venv-reader") -> list[Path]:
    """Serve the study in ``images_dir`` to one reader and save the two screenshots."""
    from playwright.sync_api import sync_playwright

    images = sorted(images_dir.glob("*.png"))
    if not images:
        raise SystemExit(f"no *.png in {images_dir}: give a reader_study_build run's images folder")
    exe = label_studio_executable(venv)
    template = prepare_database_template(exe, exe.parent.parent / "gensyn-db-template")
    admin_email, admin_password = "admin@gensyn.local", secrets.token_urlsafe(16)
    reader_password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="gensyn-reader-shots-") as tmp:
        server = LabelStudioServer(Path(tmp) / "ls", free_port(), admin_email, admin_password,
                                   venv_dir=exe.parent.parent, template_db=template)  # fmt: skip
        server.start(timeout_s=300)
        try:
            admin = LabelStudioClient.login(server.url, admin_email, admin_password)
            site = setup_site(admin, "R1", reader_password, images, seed=0)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
                )
                try:
                    page = browser.new_page(viewport=VIEWPORT)
                    open_first_image(page, reader_url(site), reader_email("R1"), reader_password)
                    question = save_png(page, out_dir / "reader_question.png")
                    press_fake(page)
                    page.locator("textarea[name=reason]").fill("rib edges too sharp, no noise")
                    page.mouse.click(1, 400)  # leave the box: no text cursor in the picture
                    reason = save_png(page, out_dir / "reader_reason.png")
                finally:
                    browser.close()
        finally:
            server.stop()
    for path in (question, reason):
        if path.stat().st_size > MAX_PNG_BYTES:
            raise SystemExit(f"{path} is {path.stat().st_size} bytes (> {MAX_PNG_BYTES})")
    return [question, reason]


def main(argv: list[str] | None = None) -> None:
    """Command line: ``reader_screenshots.py IMAGES_DIR [--out docs/img]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images_dir", type=Path, help="a reader_study_build run's images/ folder")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    for path in capture(args.images_dir, args.out):
        print(f"{path} ({path.stat().st_size // 1000} kB)")


if __name__ == "__main__":
    main()
