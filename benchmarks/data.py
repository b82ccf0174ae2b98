"""Data benchmarks: download throughput vs curl, DICOM -> NIfTI speed, X-ray preparation speed.

    python benchmarks/data.py                 # all three, defaults below
    python benchmarks/data.py --only convert --slices 300

Targets (issue 4): download >= 80 % of curl's throughput for the same file from the same
local server in the same run; a 512 x 512 x 300 DICOM series converted in <= 5 s on one
core; image preparation >= 50 images/s per core at 2048^2 -> 512^2. Each figure is printed
next to its peer (curl, dicom2nifti, a bare PIL decode+resize+save loop) measured in the
same run. CPU only: ``--device`` is accepted for symmetry with the other benchmarks and
ignored.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

SERVER = """
import sys, time
sys.path.insert(0, {tests!r})
from data_fakes import FakeState, serve
data = open({path!r}, 'rb').read()
with serve(FakeState(raw={{'big.bin': data}})) as url:
    print(url, flush=True)
    time.sleep(3600)
"""


def one_core() -> None:
    """Pin this process (and its children) to one CPU core."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def bench_download(size_mb: int, repeats: int, tmp: Path) -> dict[str, float]:
    """Median MB/s of curl and of gensyn's downloader (with MD5) for one file, same server."""
    from gensyn.data.fetch.download import RemoteFile, RetryPolicy, download_file, make_session

    src = tmp / "src.bin"
    data = np.random.default_rng(0).integers(0, 256, size_mb << 20, dtype=np.uint8).tobytes()
    src.write_bytes(data)
    import hashlib

    md5 = hashlib.md5(data).hexdigest()
    del data
    # The server runs in its own process so that neither client shares its GIL.
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(tests=str(ROOT / "tests"), path=str(src))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip() + "/raw/big.bin"  # type: ignore[union-attr]
        curl_s, curl_md5_s, ours_s, plain_s = [], [], [], []
        for _ in range(repeats):
            out = tmp / "curl.bin"
            t0 = time.perf_counter()
            subprocess.run(["curl", "-s", "-o", str(out), url], check=True)
            curl_s.append(time.perf_counter() - t0)
            subprocess.run(["md5sum", str(out)], check=True, capture_output=True)
            curl_md5_s.append(time.perf_counter() - t0)
            out.unlink()
            dest = tmp / "ours"
            shutil.rmtree(dest, ignore_errors=True)
            t0 = time.perf_counter()
            download_file(
                make_session(),
                RemoteFile("big.bin", url, size_mb << 20, md5),
                dest,
                retry=RetryPolicy(attempts=1),
            )
            ours_s.append(time.perf_counter() - t0)
            shutil.rmtree(dest, ignore_errors=True)
            t0 = time.perf_counter()  # same transfer when no checksum is published (NBIA)
            download_file(
                make_session(),
                RemoteFile("big.bin", url, size_mb << 20),
                dest,
                retry=RetryPolicy(attempts=1),
            )
            plain_s.append(time.perf_counter() - t0)
    finally:
        server.terminate()
        server.wait()
    curl = size_mb / statistics.median(curl_s)
    ours = size_mb / statistics.median(ours_s)
    curl_md5 = size_mb / statistics.median(curl_md5_s)
    plain = size_mb / statistics.median(plain_s)
    return {
        "curl_MBps": curl,
        "curl_md5sum_MBps": curl_md5,
        "gensyn_MBps": ours,
        "gensyn_no_md5_MBps": plain,
        "ratio": ours / curl,
    }


def bench_convert(slices: int, tmp: Path) -> dict[str, float]:
    """Seconds to convert one 512 x 512 x ``slices`` DICOM series (one core), and dicom2nifti's."""
    import dicom2nifti
    from data_fakes import write_dicom_series

    from gensyn.data.ct.convert import VolumeSource, convert_volume

    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:slices, 0:512, 0:512]
    body = ((y - 256) ** 2 / 200**2 + (x - 256) ** 2 / 230**2) < 1
    hu = np.where(body, 40, -1000) + rng.normal(0, 20, body.shape)
    hu = hu.astype(np.int16)
    del z, y, x, body
    series = tmp / "series"
    write_dicom_series(series, hu, pixel_spacing=(0.7, 0.7), slice_step=(0, 0, 1.25))
    del hu
    out: dict[str, float] = {}
    for suffix in (".nii.gz", ".nii"):
        t0, c0 = time.perf_counter(), time.process_time()
        convert_volume(VolumeSource("ct", "dicom", str(series)), tmp / "out", suffix=suffix)
        out[f"gensyn_s{suffix}"] = time.perf_counter() - t0
        out[f"gensyn_cpu_s{suffix}"] = time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    dicom2nifti.dicom_series_to_nifti(str(series), str(tmp / "peer.nii.gz"), reorient_nifti=True)
    out["dicom2nifti_s.nii.gz"] = time.perf_counter() - t0
    out["dicom2nifti_cpu_s.nii.gz"] = time.process_time() - c0
    return out


def bench_prep(n_images: int, tmp: Path) -> dict[str, float]:
    """Images/s of prepare_many (one process) at 2048^2 -> 512^2, and of a bare PIL loop."""
    from PIL import Image

    from gensyn.data.xray.prep import PrepJob, PrepOptions, prepare_many

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:2048, 0:2048]
    base = 2000 + 900 * np.sin(xx / 170) * np.cos(yy / 230)
    src = tmp / "xr"
    src.mkdir()
    for i in range(n_images):  # smooth "anatomy" plus quantum-like noise, 12 bits in 16
        img = (base + rng.normal(0, 8, base.shape)).clip(0, 4095).astype(np.uint16)
        Image.fromarray(img).save(src / f"{i}.png")
    mb = sum(p.stat().st_size for p in src.iterdir()) / n_images / 1e6
    jobs = [
        PrepJob(str(i), str(src / f"{i}.png"), str(tmp / "prep" / f"{i}.png"))
        for i in range(n_images)
    ]
    c0 = time.process_time()
    rows = list(prepare_many(jobs, PrepOptions(), tmp / "journal.csv", progress=False))
    ours = n_images / (time.process_time() - c0)
    assert all(r["status"] == "ok" for r in rows)
    c0 = time.process_time()
    for i in range(n_images):  # peer: the least any PNG pipeline must do
        with Image.open(src / f"{i}.png") as im:
            im.resize((512, 512), Image.Resampling.BOX).save(tmp / "peer.png")
    peer = n_images / (time.process_time() - c0)
    c0 = time.process_time()
    for i in range(n_images):
        with Image.open(src / f"{i}.png") as im:
            im.load()
    decode = n_images / (time.process_time() - c0)
    return {
        "gensyn_img_per_s": ours,
        "pil_min_img_per_s": peer,
        "decode_only_img_per_s": decode,
        "png_MB": mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["download", "convert", "prep"], default=None)
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--device", default="cpu", help="ignored: data steps are CPU-only")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gensyn-bench-data-"))
    try:
        if args.only in (None, "download"):
            r = bench_download(args.size_mb, args.repeats, tmp)
            print(
                f"download {args.size_mb} MB from 127.0.0.1: curl {r['curl_MBps']:.0f} MB/s, "
                f"gensyn (Range-capable, MD5 on the fly) {r['gensyn_MBps']:.0f} MB/s "
                f"= {100 * r['ratio']:.0f} % of curl (target >= 80 %); "
                f"curl then md5sum {r['curl_md5sum_MBps']:.0f} MB/s; gensyn without a published "
                f"checksum {r['gensyn_no_md5_MBps']:.0f} MB/s = "
                f"{100 * r['gensyn_no_md5_MBps'] / r['curl_MBps']:.0f} % of curl "
                f"(medians of {args.repeats})"
            )
        one_core()
        if args.only in (None, "convert"):
            r = bench_convert(args.slices, tmp)
            print(
                f"convert 512x512x{args.slices} DICOM series on one core, wall (CPU) s: gensyn "
                f"{r['gensyn_s.nii.gz']:.2f} ({r['gensyn_cpu_s.nii.gz']:.2f}) .nii.gz, "
                f"{r['gensyn_s.nii']:.2f} ({r['gensyn_cpu_s.nii']:.2f}) .nii; dicom2nifti "
                f"{r['dicom2nifti_s.nii.gz']:.2f} ({r['dicom2nifti_cpu_s.nii.gz']:.2f}) .nii.gz "
                "(target <= 5 s)"
            )
        if args.only in (None, "prep"):
            r = bench_prep(args.images, tmp)
            print(
                f"prepare 2048^2 16-bit PNG ({r['png_MB']:.1f} MB each) -> 512^2, per CPU second: "
                f"gensyn {r['gensyn_img_per_s']:.1f} img/s; bare PIL decode+resize+save "
                f"{r['pil_min_img_per_s']:.1f} img/s; PNG decode alone {r['decode_only_img_per_s']:.1f} img/s "
                "(target >= 50 img/s)"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
