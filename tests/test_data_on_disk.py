"""Data already in raw_dir works offline; an offline machine fails fast with what to do
(issue 36, "Data you already have" and "Downloads")."""

from __future__ import annotations

import io as pyio
import socket
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from data_fakes import FakeState, serve
from study_fakes import radchest_record

from gensyn.base import io
from gensyn.base.errors import GensynError

TOKEN = "zen-T0KEN-on-disk-1234"
OFFLINE_API = "http://zenodo.invalid/api"  # .invalid never resolves (RFC 6761)


def _closed_port_url() -> str:
    """An API address on this machine where nothing listens: every request is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


@pytest.fixture(scope="module")
def record() -> tuple[dict[str, bytes], pd.DataFrame]:
    """A small RAD-ChestCT record in its real formats (NPZ volumes, bare and zipped; tables)."""
    return radchest_record(n_cts=4, shape_vox=(24, 24, 24), spacing_mm=(14.0, 14.0, 14.0))


def _place_by_hand(raw: Path, files: dict[str, bytes]) -> None:
    """The record's files as a user has them: downloaded elsewhere, the ZIP part unpacked."""
    raw.mkdir(parents=True)
    for name, data in files.items():
        (raw / name).write_bytes(data)
        if name.endswith(".zip"):
            with zipfile.ZipFile(pyio.BytesIO(data)) as zf:
                zf.extractall(raw / name[: -len(".zip")])


def _radchest(compose, *extra: str):  # type: ignore[no-untyped-def]
    return compose("experiment=thesis", "ct_dataset=radchest", *extra)


def test_files_placed_by_hand_convert_with_the_network_unreachable(
    compose, gensyn_root: Path, record, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gensyn.core.registry import load_stages
    from gensyn.core.runs import execute, is_done, run_dir

    load_stages()
    monkeypatch.delenv("ZENODO_TOKEN", raising=False)
    files, truth = record
    _place_by_hand(gensyn_root / "data" / "radchest" / "raw", files)
    # any request to the API would be refused and retried for ~30 s before failing
    cfg = _radchest(compose, f"ct_dataset.download.api_url={_closed_port_url()}")
    start = time.monotonic()
    out = execute(cfg, "convert")
    assert time.monotonic() - start < 60
    volumes = io.read_table(out / "volumes.csv")
    assert sorted(volumes["volume_id"]) == sorted(truth["ct_id"])
    down = run_dir(cfg, "download")
    assert is_done(down)
    manifest = io.read_table(down / "manifest.csv")
    assert set(manifest["status"]) == {"found"} and set(manifest["checked"]) == {"pattern"}
    assert len(manifest[manifest["kind"] == "volume"]) == len(truth)
    assert len(manifest[manifest["kind"] == "label table"]) == 3
    assert io.read_json(down / "summary.json")["on_disk"] is True
    # later commands find the recorded download: the same config is DONE end to end
    assert execute(cfg, "convert") == out


def test_listing_of_an_earlier_download_decides_and_offline_fails_fast(
    compose, gensyn_root: Path, record, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gensyn.core.registry import load_stages
    from gensyn.core.runs import execute, run_dir

    load_stages()
    files, _ = record
    raw = gensyn_root / "data" / "radchest" / "raw"
    monkeypatch.setenv("ZENODO_TOKEN", TOKEN)
    with serve(FakeState(files=files, token=TOKEN)) as url:
        execute(_radchest(compose, f"ct_dataset.download.api_url={url}/api"), "download")
    assert (raw / ".gensyn" / "zenodo-6406114.json").is_file()  # the record's listing, kept
    monkeypatch.delenv("ZENODO_TOKEN")

    # another machine (the raw folder copied), no network: checked against the listing
    offline = _radchest(compose, f"ct_dataset.download.api_url={_closed_port_url()}")
    execute(offline, "convert")
    manifest = io.read_table(run_dir(offline, "download") / "manifest.csv")
    assert set(manifest["status"]) == {"verified"} and len(manifest) == len(files)
    checked = dict(zip(manifest["name"], manifest["checked"], strict=True))
    assert checked["trn_part2.zip"] == "unpacked" and checked["trn00001.npz"] == "md5"

    # an archive verified but not unpacked (killed in between): its volumes are not there yet
    (raw / "trn_part2").rename(raw / "elsewhere")
    with pytest.raises(GensynError, match="seems offline"):
        execute(_radchest(compose, f"ct_dataset.download.api_url={OFFLINE_API}"), "download")
    (raw / "elsewhere").rename(raw / "trn_part2")

    # a file gone: incomplete, so the network is needed, and there is none: one line, fast
    (raw / "trn00001.npz").unlink()
    for extra in ((), ("dry_run=true",)):
        cfg = _radchest(compose, f"ct_dataset.download.api_url={OFFLINE_API}", *extra)
        start = time.monotonic()
        with pytest.raises(GensynError) as err:
            execute(cfg, "download")
        assert time.monotonic() - start < 10  # no six attempts with back-off
        text = str(err.value)
        assert "\n" not in text and "cannot resolve the host name zenodo.invalid" in text
        for fix in ("$ZENODO_TOKEN", str(raw), "ct_dataset.raw_dir", "source=none"):
            assert fix in text, (fix, text)

    # a file whose bytes differ from the listing is not taken as the record's
    (raw / "trn00001.npz").write_bytes(b"\0" * len(files["trn00001.npz"]))
    with pytest.raises(GensynError, match="seems offline"):
        execute(_radchest(compose, f"ct_dataset.download.api_url={OFFLINE_API}"), "download")


def test_unfinished_download_is_not_a_complete_folder(
    compose, gensyn_root: Path, record, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gensyn.core.registry import load_stages
    from gensyn.core.runs import execute

    load_stages()
    monkeypatch.delenv("ZENODO_TOKEN", raising=False)
    files, _ = record
    raw = gensyn_root / "data" / "radchest" / "raw"
    _place_by_hand(raw, files)
    (raw / "trn00001.npz.part").write_bytes(b"half")
    with pytest.raises(GensynError, match="seems offline"):
        execute(_radchest(compose, f"ct_dataset.download.api_url={OFFLINE_API}"), "download")
    (raw / "trn00001.npz.part").unlink()
    (raw / "imgtest_Abnormality_and_Location_Labels.csv").unlink()  # still a label table ...
    execute(_radchest(compose, f"ct_dataset.download.api_url={OFFLINE_API}"), "download")
    for table in raw.glob("img*_Abnormality_and_Location_Labels.csv"):
        table.unlink()  # ... but none at all: the converter could not label the CTs
    with pytest.raises(GensynError, match="seems offline"):
        execute(
            _radchest(compose, f"ct_dataset.download.api_url={OFFLINE_API}"), "download", force=True
        )


def test_name_resolution_failure_is_not_retried(tmp_path: Path) -> None:
    from gensyn.data.fetch import nbia, zenodo
    from gensyn.data.fetch.download import (
        OfflineError,
        RemoteFile,
        RetryPolicy,
        download_file,
        make_session,
    )

    slow = RetryPolicy(attempts=6, backoff_s=5.0)  # six tries would take over a minute
    start = time.monotonic()
    with pytest.raises(OfflineError, match=r"cannot resolve the host name zenodo\.invalid"):
        download_file(make_session(), RemoteFile("a.bin", "http://zenodo.invalid/a"), tmp_path,
                      retry=slow)  # fmt: skip
    with pytest.raises(OfflineError):
        zenodo.list_record_files(make_session(), "1", api_url=OFFLINE_API, retry=slow)
    with pytest.raises(OfflineError):
        nbia.list_collections(make_session(), "http://nbia.invalid/api", retry=slow)
    assert time.monotonic() - start < 5


def test_failed_file_is_named_once(
    compose, gensyn_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gensyn.core.registry import load_stages
    from gensyn.core.runs import execute, run_dir

    load_stages()
    monkeypatch.delenv("ZENODO_TOKEN", raising=False)
    state = FakeState(files={"a.bin": b"a" * 100, "b.bin": b"b" * 100})
    state.faults["/api/records/6406114/files/a.bin/content"] = ["500"] * 10
    with serve(state) as url:
        cfg = _radchest(
            compose, f"ct_dataset.download.api_url={url}/api", "ct_dataset.download.attempts=2"
        )
        with pytest.raises(GensynError) as err:
            execute(cfg, "download")
    text = str(err.value)
    assert "(a.bin: gave up after 2 attempts; last error: _TransientError: HTTP 500)" in text
    assert text.count("a.bin") == 1, text
    manifest = io.read_table(run_dir(cfg, "download") / "manifest.csv").set_index("name")
    assert manifest.loc["a.bin", "reason"].startswith("gave up after 2 attempts")


def test_missing_raw_dir_given_on_the_command_line_is_named(compose) -> None:
    from gensyn.app.startup import check_raw_dirs

    given = {"ct_dataset.raw_dir"}
    cfg = _radchest(compose, "stage=convert", "ct_dataset.raw_dir=/nonexistent/radchest")
    with pytest.raises(GensynError) as err:
        check_raw_dirs(cfg, given)
    text = str(err.value)
    assert text.startswith("ct_dataset.raw_dir=/nonexistent/radchest: no such folder")
    assert "\n" not in text and "stage=download" in text
    check_raw_dirs(cfg, set())  # the default folder, not yet downloaded: download makes it
    check_raw_dirs(_radchest(compose, "stage=download", "ct_dataset.raw_dir=/new"), given)
    xrays = compose("experiment=thesis", "stage=prepare_xrays", "dataset.raw_dir=/nonexistent")
    with pytest.raises(GensynError, match=r"^dataset.raw_dir=/nonexistent: no such folder"):
        check_raw_dirs(xrays, {"dataset.raw_dir"})


@pytest.mark.slow
def test_missing_raw_dir_fails_at_start_up_without_a_run_folder(launch, gensyn_root: Path) -> None:
    proc = launch(
        "stage=convert",
        "experiment=thesis",
        "ct_dataset=radchest",
        "ct_dataset.raw_dir=/nonexistent/radchest",
        f"ct_dataset.download.api_url={OFFLINE_API}",
        check=False,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    errors = [ln for ln in out.splitlines() if "ERROR" in ln]
    assert proc.returncode == 1 and len(errors) == 1, out
    assert "ct_dataset.raw_dir=/nonexistent/radchest: no such folder" in errors[0]
    assert "Traceback" not in out and list(gensyn_root.iterdir()) == []


def test_sweep_summary_names_the_stage_that_comes_next() -> None:
    from gensyn.app.launcher import PlannedJob, sweep_summary

    def plans(stage: str) -> list[PlannedJob]:
        return [PlannedJob(i, [], None, False, stage) for i in range(2)]

    jobs = [
        ["experiment=thesis", "ct_dataset=lidc_idri", "shard=0", "num_shards=2", "stage=convert"],
        ["experiment=thesis", "ct_dataset=lidc_idri", "shard=1", "num_shards=2", "stage=convert"],
    ]
    line = sweep_summary("local sweep", plans("convert"), set(), jobs)
    assert line.endswith(
        "Next: python launch.py experiment=thesis ct_dataset=lidc_idri stage=drr"
    ), line
    assert sweep_summary("s", plans("download"), set(), jobs).endswith("stage=convert")
    assert sweep_summary("s", plans("classify"), {1}, jobs).endswith(
        "only the failed jobs run), then python launch.py experiment=thesis "
        "ct_dataset=lidc_idri stage=report"
    )
    assert "Next:" not in sweep_summary("s", plans("report"), set(), jobs)


def test_raw_dir_that_cannot_be_made_is_one_line(compose, tmp_path: Path) -> None:
    from gensyn.core.registry import load_stages
    from gensyn.core.runs import execute

    load_stages()
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cfg = _radchest(compose, f"ct_dataset.raw_dir={blocker}/raw",
                    f"ct_dataset.download.api_url={OFFLINE_API}")  # fmt: skip
    with pytest.raises(GensynError, match=r"ct_dataset\.raw_dir=.*a_file/raw: cannot create it"):
        execute(cfg, "download")


def test_nbia_series_listed_by_an_earlier_download_are_checked_offline(
    compose, gensyn_root: Path
) -> None:
    import shutil

    from data_fakes import make_series_zip

    from gensyn.core.registry import load_stages
    from gensyn.core.runs import execute, run_dir

    load_stages()
    state = FakeState()
    for i in range(3):
        uid = f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{i}"
        state.series[uid] = {"SeriesInstanceUID": uid, "Collection": "LIDC-IDRI",
                             "Modality": "CT", "PatientID": f"LIDC-IDRI-{i:04d}",
                             "ImageCount": 3}  # fmt: skip
        state.series_zip[uid] = make_series_zip(3, seed=i)
    lidc = ("experiment=thesis", "ct_dataset=lidc_idri")
    with serve(state) as url:
        execute(compose(*lidc, f"ct_dataset.download.api_url={url}/nbia"), "download")
    raw = gensyn_root / "data" / "lidc_idri" / "raw"
    assert (raw / ".gensyn" / "nbia-LIDC-IDRI-CT.json").is_file()
    offline = compose(*lidc, "ct_dataset.download.api_url=http://nbia.invalid/api")
    execute(offline, "download")
    manifest = io.read_table(run_dir(offline, "download") / "manifest.csv")
    assert sorted(manifest["name"]) == sorted(state.series)
    assert set(manifest["checked"]) == {"folder"} and set(manifest["status"]) == {"verified"}
    shutil.rmtree(raw / next(iter(state.series)))  # a series gone: the server is needed
    with pytest.raises(GensynError, match="seems offline") as err:
        execute(offline, "download", force=True)
    assert "ZENODO_TOKEN" not in str(err.value) and "source=none" in str(err.value)
