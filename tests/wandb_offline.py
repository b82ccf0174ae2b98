"""Reading what W&B wrote offline, without network or W&B's own reader (shared by tests)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any


def wandb_records(run_folder: Path, kind: str) -> list[Any]:
    """The protobuf records of type ``kind`` (``history``, ``artifact``, ``run`` ...) in the
    offline W&B runs of a run folder, in file order.

    An offline run is a ``.wandb`` file: a 7-byte header, then LevelDB-log records (32 KiB
    blocks; each chunk: CRC, length, type FULL/FIRST/MIDDLE/LAST) holding protobuf Records.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    records = []
    for path in sorted(run_folder.glob("wandb/offline-run-*/*.wandb")):
        data, pos, pending = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # block trailer too short for a header: padding
                pos += 32768 - pos % 32768
                continue
            _crc, length, chunk = struct.unpack("<IHB", data[pos : pos + 7])
            pending += data[pos + 7 : pos + 7 + length]
            pos += 7 + length
            if chunk in (1, 4):  # FULL or LAST: a whole record
                record = pb.Record()
                record.ParseFromString(pending)
                pending = b""
                if record.WhichOneof("record_type") == kind:
                    records.append(getattr(record, kind))
    return records
