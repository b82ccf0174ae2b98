"""Local stand-ins for the Zenodo and NBIA REST APIs (used by the data tests and benchmarks).

One threaded ``http.server`` on 127.0.0.1 serves:

* ``/api/records/<id>`` and ``/api/records/<id>/files`` (Zenodo record JSON, InvenioRDM shape),
  ``/api/records/<id>/files/<key>/content`` (file bytes, honours ``Range: bytes=N-``);
* ``/nbia/getCollectionValues``, ``/nbia/getSeries?Collection=``,
  ``/nbia/getImage?SeriesInstanceUID=`` (a ZIP, honours Range);
* ``/raw/<name>`` (plain bytes with Range, for the curl benchmark).

Faults are queued per path and consumed one per request: ``"500"`` (HTTP 500), ``"cut"``
(send half the body then close the connection), ``"garbage"`` (right length, wrong bytes),
``"norange"`` (ignore the Range header, answer 200 with everything).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class FakeState:
    """What the fake server holds and how it misbehaves."""

    record_id: str = "6406114"
    files: dict[str, bytes] = field(default_factory=dict)  # Zenodo file key -> bytes
    bad_md5: set[str] = field(default_factory=set)  # keys whose published MD5 is wrong
    token: str | None = None  # if set, every request needs "Authorization: Bearer <token>"
    collections: list[str] = field(default_factory=lambda: ["LIDC-IDRI", "NSCLC-Radiomics"])
    series: dict[str, dict] = field(default_factory=dict)  # uid -> getSeries row
    series_zip: dict[str, bytes] = field(default_factory=dict)  # uid -> ZIP bytes
    raw: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    throttle_s_per_mib: float = 0.0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self, path: str) -> str | None:
        with self.lock:
            queue = self.faults.get(path)
            return queue.pop(0) if queue else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: FakeState  # set on the subclass made per server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _json(self, obj: object) -> None:
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _status(self, code: int) -> None:
        body = f'{{"status": {code}}}'.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _bytes(self, data: bytes, path: str) -> None:
        fault = self.state.next_fault(path)
        if fault == "500":
            return self._status(500)
        if fault == "garbage":
            data = bytes(len(data))
        start = 0
        rng = self.headers.get("Range")
        if rng and fault != "norange":
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                return self._status(416)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = memoryview(data)[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if fault == "cut":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return None
        step = 1 << 20 if not self.state.throttle_s_per_mib else 1 << 16
        for i in range(0, len(body), step):
            self.wfile.write(body[i : i + step])
            if self.state.throttle_s_per_mib:
                import time

                time.sleep(self.state.throttle_s_per_mib * step / (1 << 20))
        return None

    def do_GET(self) -> None:
        st = self.state
        url = urlparse(self.path)
        path = unquote(url.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with st.lock:
            st.requests.append((self.path, dict(self.headers)))
        if st.token is not None and self.headers.get("Authorization") != f"Bearer {st.token}":
            code = 401 if "Authorization" not in self.headers else 403
            return self._status(code)
        base = f"http://{self.headers['Host']}"
        rec = f"/api/records/{st.record_id}"
        if path in (rec, rec + "/files"):
            if st.next_fault(path) == "500":
                return self._status(500)
            entries = [
                {
                    "key": k,
                    "size": len(v),
                    "id": k,
                    "checksum": "md5:"
                    + (hashlib.md5(v).hexdigest() if k not in st.bad_md5 else "0" * 32),
                    "links": {"self": f"{base}{rec}/files/{k}/content"},
                }
                for k, v in st.files.items()
            ]
            return self._json(
                {"id": st.record_id, "files": entries} if path == rec else {"entries": entries}
            )
        if path.startswith(rec + "/files/") and path.endswith("/content"):
            key = path[len(rec + "/files/") : -len("/content")]
            if key not in st.files:
                return self._status(404)
            return self._bytes(st.files[key], path)
        if path.startswith("/api/records/"):
            return self._status(404)
        if path == "/nbia/getCollectionValues":
            return self._json([{"Collection": c} for c in st.collections])
        if path == "/nbia/getSeries":
            coll = query.get("Collection")
            return self._json([r for r in st.series.values() if r["Collection"] == coll])
        if path == "/nbia/getImage":
            uid = query.get("SeriesInstanceUID", "")
            if uid not in st.series_zip:
                return self._status(404)
            return self._bytes(st.series_zip[uid], f"getImage/{uid}")
        if path.startswith("/raw/"):
            return self._bytes(st.raw[path[5:]], path)
        return self._status(404)


@contextmanager
def serve(state: FakeState) -> Iterator[str]:
    """Run the fake server in a thread; yield its base URL ``http://127.0.0.1:<port>``."""
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def make_series_zip(n_images: int, seed: int = 0, with_license: bool = True) -> bytes:
    """A ZIP like NBIA's getImage answer: ``n_images`` tiny DICOM-like files (+ a LICENSE)."""
    import io
    import random
    import zipfile

    rng = random.Random(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n_images):
            payload = bytes(128) + b"DICM" + bytes(rng.getrandbits(8) for _ in range(256))
            zf.writestr(f"1-{i + 1:03d}.dcm", payload)
        if with_license:
            zf.writestr("LICENSE", "CC BY 3.0")
    return buf.getvalue()


def write_dicom_series(
    folder,
    hu,
    *,
    row_dir=(1.0, 0.0, 0.0),
    col_dir=(0.0, 1.0, 0.0),
    first_position=(0.0, 0.0, 0.0),
    pixel_spacing=(1.0, 1.0),
    slice_step=None,
    series_uid="1.2.826.0.1.3680043.8.498.1",
    skip_slices=(),
    shuffle_seed=0,
    slope=1.0,
    intercept=-1024.0,
):
    """Write ``hu`` (N slices x rows x columns, HU) as single-frame CT DICOM files.

    ``row_dir``/``col_dir`` are ImageOrientationPatient (LPS), ``pixel_spacing`` is
    (between rows, between columns) in mm and ``slice_step`` the LPS vector from one
    slice's position to the next (default: the normal times 1.5 mm). Files are written in
    a shuffled order with shuffled names, so readers must sort by position.
    """
    import random
    from pathlib import Path

    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    row_dir = np.asarray(row_dir, float)
    col_dir = np.asarray(col_dir, float)
    normal = np.cross(row_dir, col_dir)
    step = normal * 1.5 if slice_step is None else np.asarray(slice_step, float)
    hu = np.asarray(hu)
    stored = np.clip(np.rint((hu - intercept) / slope), 0, 65535).astype(np.uint16)
    order = list(range(hu.shape[0]))
    random.Random(shuffle_seed).shuffle(order)
    paths = []
    for n, k in enumerate(order):
        if k in skip_slices:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
        ds.Modality = "CT"
        ds.PatientID = "PHANTOM"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(first_position) + k * step]
        ds.PixelSpacing = [f"{pixel_spacing[0]:.6f}", f"{pixel_spacing[1]:.6f}"]
        ds.SliceThickness = f"{float(np.linalg.norm(step)):.4f}"
        ds.Rows, ds.Columns = int(hu.shape[1]), int(hu.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        path = folder / f"img{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


#: study finding -> the word PadChest's ``Labels`` uses for it (fakes only)
_PADCHEST_WORD = {
    "Effusion": "pleural effusion",
    "Pneumothorax": "pneumothorax",
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Pneumonia": "pneumonia",
}


def _fake_patients(n_patients: int, seed: int, prevalence: float = 0.3):
    """Per patient: (index, 0/1 labels of the five findings, number of images 1-3)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [
        (p, (rng.random(5) < prevalence).astype(int), int(rng.integers(1, 4)))
        for p in range(n_patients)
    ]


def write_padchest_tree(raw, n_patients: int = 30, seed: int = 0, size_px: int = 40):
    """A PadChest-like ``raw_dir``: the label table in the real file's format and 16-bit PNGs
    (12-bit values) in ``images/0/``; the first image of every third patient is a lateral.

    Images carry the marks of :func:`classify_fakes.draw_xray`, so a small CNN can learn them.
    Returns the written rows as a table: image_id, patient_id, projection, the five findings.
    """
    from pathlib import Path

    import numpy as np
    import pandas as pd
    from classify_fakes import FINDINGS, draw_xray
    from PIL import Image
    from test_data_labels import PADCHEST_HEADER, _pc_row

    raw = Path(raw)
    (raw / "images" / "0").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    rows, lines = [], [PADCHEST_HEADER]
    for p, labels, n_img in _fake_patients(n_patients, seed):
        words = [_PADCHEST_WORD[f] for f, on in zip(FINDINGS, labels, strict=True) if on]
        cell = '"' + repr(words or ["normal"]).replace('"', "") + '"'
        for i in range(n_img):
            image_id = f"pc_{p:04d}_{i}.png"
            projection = "L" if i == 0 and p % 3 == 0 and n_img > 1 else "PA"
            pixels = draw_xray(labels, size_px, rng).astype(np.uint16) * 16
            Image.fromarray(pixels[:, : size_px - 6]).save(raw / "images" / "0" / image_id)
            lines.append(_pc_row(len(rows), image_id, f"pcp{p:04d}", projection, cell))
            rows.append(
                {
                    "image_id": image_id,
                    "patient_id": f"pcp{p:04d}",
                    "projection": projection,
                    **dict(zip(FINDINGS, labels, strict=True)),
                }
            )
    (raw / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv").write_text(
        "\n".join(lines) + "\n"
    )
    return pd.DataFrame(rows)


def write_chestxray14_tree(
    raw, n_patients: int = 20, seed: int = 0, size_px: int = 40, without: tuple[str, ...] = ()
):
    """A ChestX-ray14-like ``raw_dir``: ``Data_Entry_2017.csv`` in the real format and 8-bit
    PNGs named ``<patient:08d>_<follow-up:03d>.png`` in ``images/images_001/images/`` (as the
    NIH archives unpack); the last image of every fourth patient is AP. No split lists
    (write ``train_val_list.txt`` / ``test_list.txt`` yourself). Findings in ``without`` have
    no positive case (a subset without Pneumonia). Returns the written rows: image_id,
    patient_id, view, the five findings.
    """
    from pathlib import Path

    import numpy as np
    import pandas as pd
    from classify_fakes import FINDINGS, draw_xray
    from PIL import Image
    from test_data_labels import CXR14

    raw = Path(raw)
    folder = raw / "images" / "images_001" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    rows, lines = [], [CXR14.splitlines()[0]]
    for p, labels, n_img in _fake_patients(n_patients, seed):
        labels = [0 if f in without else on for f, on in zip(FINDINGS, labels, strict=True)]
        names = [f for f, on in zip(FINDINGS, labels, strict=True) if on]
        cell = "|".join(names) or "No Finding"
        for i in range(n_img):
            image_id = f"{p + 1:08d}_{i:03d}.png"
            view = "AP" if i == n_img - 1 and p % 4 == 3 else "PA"
            Image.fromarray(draw_xray(labels, size_px, rng)).save(folder / image_id)
            lines.append(f"{image_id},{cell},{i},{p + 1},50,M,{view},2500,2048,0.168,0.168,")
            rows.append(
                {
                    "image_id": image_id,
                    "patient_id": str(p + 1),
                    "view": view,
                    **dict(zip(FINDINGS, labels, strict=True)),
                }
            )
    (raw / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    return pd.DataFrame(rows)


def write_dicom_xray(
    path,
    stored,
    *,
    modality="CR",
    photometric="MONOCHROME1",
    bits_stored=12,
    slope=None,
    intercept=None,
    window=None,
    voi_lut=None,
    patient_id="XR1",
):
    """Write ``stored`` (rows x columns, unsigned stored values) as a single-frame DICOM
    radiograph. ``window`` = (center, width); ``voi_lut`` = (first mapped value, bits, table)
    for a VOI LUT Sequence; ``slope``/``intercept`` the Modality LUT's rescale."""
    from pathlib import Path

    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1" if modality == "CR" else "1.2.840.10008.5.1.4.1.1.1.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept or 0:g}"
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter = f"{window[0]:g}"
        ds.WindowWidth = f"{window[1]:g}"
    if voi_lut is not None:
        first, bits, table = voi_lut
        item = Dataset()
        item.LUTDescriptor = [len(table), int(first), int(bits)]
        item["LUTDescriptor"].VR = "US"
        item.LUTData = [int(v) for v in table]
        item["LUTData"].VR = "US"
        ds.VOILUTSequence = [item]
    ds.PixelData = np.ascontiguousarray(stored.astype(np.uint16)).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
