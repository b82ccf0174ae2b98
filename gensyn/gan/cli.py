"""Train or apply the CycleGAN outside the pipeline (tests, benchmarks, quick experiments).

    python -m gensyn.gan.cli train --domain-a DRR_DIR --domain-b XRAY_DIR --out RUN_DIR \\
        --set ngf=16 --set n_epochs=2 --set n_epochs_decay=2 --device cpu
    python -m gensyn.gan.cli translate --generator RUN_DIR/generator_a2b.pt \\
        --input DRR_DIR --out OUT_DIR

``--set key=value`` overrides any ``generator`` option (see conf/generator/cyclegan.yaml).
The pipeline stages (``stage=gan_train``, ``stage=gan_translate``) are the normal way in;
this tool uses the same code.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from gensyn.gan.settings import CycleGANSettings


def parse_overrides(pairs: list[str]) -> CycleGANSettings:
    """Build a CycleGANSettings from ``key=value`` strings (values typed like the defaults)."""
    fields = {f.name: f for f in dataclasses.fields(CycleGANSettings)}
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in fields:
            allowed = ", ".join(sorted(fields))
            raise SystemExit(f"--set {pair!r}: expected key=value with key one of: {allowed}")
        kind: Any = type(fields[key].default)
        if kind is bool:
            values[key] = raw.lower() in ("1", "true", "yes", "on")
        else:
            values[key] = kind(raw)
    return CycleGANSettings(**values)


def list_images(folder: str) -> list[Path]:
    """PNG files of ``folder``, sorted by name."""
    paths = sorted(Path(folder).glob("*.png"))
    if not paths:
        raise SystemExit(f"no .png images in {folder}")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gensyn.gan.cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a CycleGAN (resumes from OUT/checkpoint.pt)")
    train.add_argument("--domain-a", required=True, help="folder of domain A PNGs (DRRs)")
    train.add_argument("--domain-b", required=True, help="folder of domain B PNGs (real X-rays)")
    train.add_argument("--out", required=True, help="run folder (checkpoint, generators)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    train.add_argument("--device", default="auto")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--num-workers", type=int, default=0)
    train.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    tr = sub.add_parser("translate", help="translate a folder of PNGs with a saved generator")
    tr.add_argument("--generator", required=True)
    tr.add_argument("--input", required=True)
    tr.add_argument("--out", required=True)
    tr.add_argument("--device", default="auto")
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    import torch

    from gensyn.gan.trainer import CycleGANTrainer, TrainingInterrupted, resolve_device

    if args.command == "train":
        if args.threads:
            torch.set_num_threads(args.threads)
        opts = parse_overrides(args.set)
        trainer = CycleGANTrainer(
            opts,
            list_images(args.domain_a),
            list_images(args.domain_b),
            args.out,
            device=args.device,
            seed=args.seed,
            num_workers=args.num_workers,
        )
        try:
            trainer.fit()
        except TrainingInterrupted as exc:
            print(exc, file=sys.stderr)
            return 3
        trainer.save_generator(Path(args.out) / "generator_a2b.pt", "a2b")
        trainer.save_generator(Path(args.out) / "generator_b2a.pt", "b2a")
        return 0

    from gensyn.gan.translate import load_generator, translate_files

    device = resolve_device(args.device)
    net, saved = load_generator(args.generator, device)
    sources = list_images(args.input)
    outputs = [Path(args.out) / p.name for p in sources]
    n = translate_files(
        net,
        sources,
        outputs,
        net.in_channels,
        args.batch_size,
        saved["precision"],
        bool(saved.get("translate_channels_last", False)),
        args.num_workers,
    )
    print(f"translated {n} images into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
