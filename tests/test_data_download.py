"""Downloaders against local fake Zenodo / NBIA servers: resume, retries, auth, checksums, kill."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from data_fakes import FakeState, make_series_zip, serve

from gensyn.data.fetch import nbia, zenodo
from gensyn.data.fetch.download import (
    AuthError,
    ChecksumError,
    DownloadError,
    RemoteFile,
    RetryPolicy,
    download_file,
    download_many,
    make_session,
    md5_of_file,
    read_token,
)

FAST = RetryPolicy(attempts=4, backoff_s=0.01, connect_timeout_s=5, read_timeout_s=5)
TOKEN = "s3cr3t-T0KEN-value-9876"


def _payload(n: int, seed: int) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + bytes(n % 32)


@pytest.fixture
def zstate() -> FakeState:
    return FakeState(
        files={
            "a.npz": _payload(300_000, 1),
            "labels.csv": _payload(1000, 2),
            "dir b.zip": _payload(70_000, 3),
        }
    )


def _list(url: str, token: str | None = None) -> list[RemoteFile]:
    return zenodo.list_record_files(
        make_session(token), "6406114", api_url=url + "/api", retry=FAST
    )


def test_zenodo_listing_and_parallel_download(zstate: FakeState, tmp_path: Path) -> None:
    with serve(zstate) as url:
        files = _list(url)
        assert {f.name for f in files} == set(zstate.files)
        assert all(f.md5 == hashlib.md5(zstate.files[f.name]).hexdigest() for f in files)
        assert {f.name: f.size_bytes for f in files} == {k: len(v) for k, v in zstate.files.items()}
        _done, failed = download_many(
            make_session(), files, tmp_path, workers=3, retry=FAST, progress=False
        )
    assert failed == []
    for name, data in zstate.files.items():
        assert (tmp_path / name).read_bytes() == data
        assert not (tmp_path / (name + ".part")).exists()
        # the sidecar is md5sum -c compatible
        assert (tmp_path / (name + ".md5")).read_text().split()[0] == hashlib.md5(data).hexdigest()


def test_rerun_skips_verified_files(zstate: FakeState, tmp_path: Path) -> None:
    with serve(zstate) as url:
        files = _list(url)
        download_many(make_session(), files, tmp_path, retry=FAST, progress=False)
        n_before = len(zstate.requests)
        download_many(make_session(), files, tmp_path, retry=FAST, progress=False)
        assert len(zstate.requests) == n_before  # nothing fetched again


def test_files_endpoint_shape_is_read() -> None:
    entries = [
        {
            "key": "x.npz",
            "size": 3,
            "checksum": "md5:ABC",
            "links": {"content": "http://h/x/content", "self": "http://h/x"},
        },
        {
            "filename": "old.zip",
            "filesize": 5,
            "checksum": "0123abcd",
            "links": {"download": "http://h/old"},
        },
    ]
    got = zenodo.parse_file_entries(entries, "http://h/api/records/1")
    assert got == [
        RemoteFile("x.npz", "http://h/x/content", 3, "abc"),
        RemoteFile("old.zip", "http://h/old", 5, "0123abcd"),
    ]
    with pytest.raises(ValueError, match="sha256"):
        zenodo.parse_file_entries([{"key": "y", "checksum": "sha256:00"}], "r")


def test_resume_with_range_after_cut_connection(zstate: FakeState, tmp_path: Path) -> None:
    key = "a.npz"
    path = f"/api/records/6406114/files/{key}/content"
    zstate.faults[path] = ["cut", "cut"]
    with serve(zstate) as url:
        remote = next(f for f in _list(url) if f.name == key)
        out = download_file(make_session(), remote, tmp_path, retry=FAST)
    assert out.read_bytes() == zstate.files[key]
    ranges = [h.get("Range") for p, h in zstate.requests if p == path]
    assert len(ranges) == 3 and ranges[0] is None
    # each retry asks only for the bytes after those kept from the cut transfers
    offsets = [int(r.split("=")[1].rstrip("-")) for r in ranges[1:]]
    assert 0 < offsets[0] < offsets[1] < len(zstate.files[key])


def test_server_ignoring_range_restarts_cleanly(zstate: FakeState, tmp_path: Path) -> None:
    key = "a.npz"
    path = f"/api/records/6406114/files/{key}/content"
    zstate.faults[path] = ["cut", "norange"]
    with serve(zstate) as url:
        remote = next(f for f in _list(url) if f.name == key)
        out = download_file(make_session(), remote, tmp_path, retry=FAST)
    assert out.read_bytes() == zstate.files[key]


def test_retries_on_500_then_succeeds(zstate: FakeState, tmp_path: Path) -> None:
    zstate.faults["/api/records/6406114"] = ["500", "500"]
    zstate.faults["/api/records/6406114/files/labels.csv/content"] = ["500", "500"]
    with serve(zstate) as url:
        remote = next(f for f in _list(url) if f.name == "labels.csv")
        out = download_file(make_session(), remote, tmp_path, retry=FAST)
    assert out.read_bytes() == zstate.files["labels.csv"]


def test_persistent_500_gives_up_with_reason(zstate: FakeState, tmp_path: Path) -> None:
    zstate.faults["/api/records/6406114/files/labels.csv/content"] = ["500"] * 10
    with serve(zstate) as url:
        remote = next(f for f in _list(url) if f.name == "labels.csv")
        with pytest.raises(DownloadError, match="HTTP 500"):
            download_file(make_session(), remote, tmp_path, retry=FAST)
    assert not (tmp_path / "labels.csv").exists()


def test_wrong_bytes_are_refetched(zstate: FakeState, tmp_path: Path) -> None:
    zstate.faults["/api/records/6406114/files/labels.csv/content"] = ["garbage"]
    with serve(zstate) as url:
        remote = next(f for f in _list(url) if f.name == "labels.csv")
        out = download_file(make_session(), remote, tmp_path, retry=FAST)
    assert md5_of_file(out) == hashlib.md5(zstate.files["labels.csv"]).hexdigest()


def test_wrong_published_checksum_fails_and_leaves_no_file(
    zstate: FakeState, tmp_path: Path
) -> None:
    zstate.bad_md5.add("labels.csv")
    with serve(zstate) as url:
        files = _list(url)
        done, failed = download_many(make_session(), files, tmp_path, retry=FAST, progress=False)
        with pytest.raises(ChecksumError):
            download_file(
                make_session(),
                next(f for f in files if f.name == "labels.csv"),
                tmp_path,
                retry=FAST,
            )
    assert [name for name, _ in failed] == ["labels.csv"]
    assert "MD5" in failed[0][1]
    assert not (tmp_path / "labels.csv").exists()
    assert not (tmp_path / "labels.csv.part").exists()
    assert len(done) == 2


@pytest.mark.parametrize("token, code", [(None, "401"), ("wrong-token", "403")])
def test_auth_errors_explain_the_token(
    zstate: FakeState, token: str | None, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    zstate.token = TOKEN
    caplog.set_level(logging.DEBUG)
    with serve(zstate) as url, pytest.raises(AuthError) as err:
        _list(url, token)
    msg = str(err.value)
    assert code in msg and "ZENODO_TOKEN" in msg and "token" in msg
    if token:
        assert token not in msg and token not in caplog.text


def test_token_is_sent_but_never_logged(
    zstate: FakeState, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    zstate.token = TOKEN
    zstate.faults["/api/records/6406114/files/a.npz/content"] = ["cut", "500"]
    caplog.set_level(logging.DEBUG)
    with serve(zstate) as url:
        files = _list(url, TOKEN)
        download_many(make_session(TOKEN), files, tmp_path, retry=FAST, progress=False)
        # a 403 on a file mid-run is an AuthError too
        zstate.token = "rotated"
        with pytest.raises(AuthError):
            download_file(
                make_session(TOKEN), RemoteFile("new.bin", files[0].url), tmp_path, retry=FAST
            )
    assert all(h.get("Authorization") == f"Bearer {TOKEN}" for _, h in zstate.requests[:-1])
    assert all(TOKEN not in p for p, _ in zstate.requests)  # never in a URL
    assert TOKEN not in caplog.text
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes()


def test_read_token_env_then_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENSYN_TEST_TOKEN", raising=False)
    assert read_token("GENSYN_TEST_TOKEN", None) is None
    tok = tmp_path / "tok"
    tok.write_text(TOKEN + "\n")
    assert read_token("GENSYN_TEST_TOKEN", str(tok)) == TOKEN
    monkeypatch.setenv("GENSYN_TEST_TOKEN", "from-env")
    assert read_token("GENSYN_TEST_TOKEN", str(tok)) == "from-env"
    monkeypatch.delenv("GENSYN_TEST_TOKEN")
    with pytest.raises(FileNotFoundError, match="token_file"):
        read_token("GENSYN_TEST_TOKEN", str(tmp_path / "missing"))


_KILL_SCRIPT = textwrap.dedent("""
    import sys
    from gensyn.data.fetch.download import RemoteFile, RetryPolicy, download_file, make_session
    url, dest, size, md5 = sys.argv[1:5]
    download_file(make_session(), RemoteFile("big.bin", url, int(size), md5), dest,
                  retry=RetryPolicy(attempts=3, backoff_s=0.01))
""")


def test_killed_download_resumes_to_a_verified_file(tmp_path: Path) -> None:
    data = _payload(4 << 20, 7)
    state = FakeState(raw={"big.bin": data}, throttle_s_per_mib=1.0)  # ~1 MiB/s
    md5 = hashlib.md5(data).hexdigest()
    part = tmp_path / "big.bin.part"
    with serve(state) as url:
        args = [
            sys.executable,
            "-c",
            _KILL_SCRIPT,
            url + "/raw/big.bin",
            str(tmp_path),
            str(len(data)),
            md5,
        ]
        proc = subprocess.Popen(args, cwd=Path(__file__).parents[1])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < 1 << 20):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        had = part.stat().st_size
        assert 0 < had < len(data)
        assert not (tmp_path / "big.bin").exists()  # no final file that looks complete
        state.throttle_s_per_mib = 0.0
        rc = subprocess.run(args, cwd=Path(__file__).parents[1], timeout=60).returncode
    assert rc == 0
    assert (tmp_path / "big.bin").read_bytes() == data
    assert not part.exists()
    assert state.requests[-1][1].get("Range") == f"bytes={had}-"


# ------------------------------------------------------------------------------------ NBIA
@pytest.fixture
def nstate() -> FakeState:
    st = FakeState()
    for i, n in enumerate([3, 5, 2, 4]):
        uid = f"1.3.6.1.4.1.14519.5.2.1.6279.{i}"
        st.series[uid] = {
            "SeriesInstanceUID": uid,
            "Collection": "LIDC-IDRI",
            "Modality": "CT",
            "PatientID": f"LIDC-IDRI-{i:04d}",
            "ImageCount": n,
            "FileSize": 999,
        }
        st.series_zip[uid] = make_series_zip(n, seed=i)
    st.series["1.2.xray"] = {
        "SeriesInstanceUID": "1.2.xray",
        "Collection": "LIDC-IDRI",
        "Modality": "DX",
        "ImageCount": 1,
    }
    return st


def test_nbia_collection_validation(nstate: FakeState) -> None:
    with serve(nstate) as url:
        names = nbia.list_collections(make_session(), url + "/nbia", retry=FAST)
    nbia.validate_collection("LIDC-IDRI", names)
    with pytest.raises(ValueError, match="Did you mean: LIDC-IDRI"):
        nbia.validate_collection("LIDC_IDRI", names)


def test_nbia_shards_partition_series(nstate: FakeState) -> None:
    with serve(nstate) as url:
        series = nbia.list_series(make_session(), "LIDC-IDRI", url + "/nbia", retry=FAST)
    assert len(series) == 4 and all(s.modality == "CT" for s in series)
    parts = [nbia.shard(series, i, 3) for i in range(3)]
    assert sorted(s.uid for p in parts for s in p) == sorted(s.uid for s in series)
    assert sum(len(p) for p in parts) == 4
    with pytest.raises(ValueError, match="num_shards"):
        nbia.shard(series, 3, 3)


def test_nbia_download_verify_unpack_and_resume(nstate: FakeState, tmp_path: Path) -> None:
    uids = sorted(nstate.series_zip)
    nstate.faults[f"getImage/{uids[0]}"] = ["cut"]
    nstate.faults[f"getImage/{uids[1]}"] = ["garbage"]  # corrupt ZIP: fetched again
    with serve(nstate) as url:
        series = nbia.list_series(make_session(), "LIDC-IDRI", url + "/nbia", retry=FAST)
        _done, failed = nbia.download_collection(
            make_session(), series, tmp_path, api_url=url + "/nbia", retry=FAST, progress=False
        )
        assert failed == []
        for s in series:
            files = sorted(p.name for p in (tmp_path / s.uid).iterdir())
            assert len([f for f in files if f.endswith(".dcm")]) == s.image_count
        assert not list(tmp_path.glob("*.unpacking")) and not list((tmp_path / ".zips").iterdir())
        n = len(nstate.requests)
        nbia.download_collection(
            make_session(), series, tmp_path, api_url=url + "/nbia", retry=FAST, progress=False
        )
        assert len(nstate.requests) == n  # resume per series: nothing fetched again


def test_nbia_image_count_mismatch_is_a_failure(nstate: FakeState, tmp_path: Path) -> None:
    uid = sorted(nstate.series_zip)[0]
    nstate.series[uid]["ImageCount"] = 7
    with serve(nstate) as url:
        series = nbia.list_series(make_session(), "LIDC-IDRI", url + "/nbia", retry=FAST)
        done, failed = nbia.download_collection(
            make_session(), series, tmp_path, api_url=url + "/nbia", retry=FAST, progress=False
        )
    assert [u for u, _ in failed] == [uid]
    assert "3 DICOM files, NBIA lists 7" in failed[0][1]
    assert not (tmp_path / uid).exists() and len(done) == 3


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_unpack_archives_atomically_and_safely(tmp_path: Path) -> None:
    import tarfile

    from gensyn.data.fetch.archives import archive_stem, unpack_archive

    (tmp_path / "p1.zip").write_bytes(_zip_bytes({"ct/trn1.npz": b"a", "trn2.npz": b"b"}))
    out = unpack_archive(tmp_path / "p1.zip", tmp_path)
    assert out == tmp_path / "p1" and (out / "ct" / "trn1.npz").read_bytes() == b"a"
    assert unpack_archive(tmp_path / "p1.zip", tmp_path) == out  # done: skipped
    src = tmp_path / "x.npz"
    src.write_bytes(b"xyz")
    with tarfile.open(tmp_path / "p2.tar.gz", "w:gz") as tf:
        tf.add(src, arcname="inner/x.npz")
    assert (
        unpack_archive(tmp_path / "p2.tar.gz", tmp_path) / "inner" / "x.npz"
    ).read_bytes() == b"xyz"
    (tmp_path / "evil.zip").write_bytes(_zip_bytes({"../../escape.txt": b"!"}))
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really")
    for name, msg in (("evil.zip", "escapes"), ("bad.zip", "cannot unpack")):
        with pytest.raises(DownloadError, match=msg):
            unpack_archive(tmp_path / name, tmp_path)
    assert not (tmp_path.parent / "escape.txt").exists()
    assert not list(tmp_path.glob("*.unpacking")) and not (tmp_path / "evil").exists()
    assert archive_stem("a.TAR.GZ") == "a" and archive_stem("a.npz") is None
