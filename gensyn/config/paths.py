"""Schema of the ``paths`` group: where data and run folders live (never written twice)."""

from dataclasses import dataclass


@dataclass
class PathsConfig:
    """All folders derive from ``root_dir`` unless set on their own."""

    root_dir: str = "."  # GENSYN_ROOT in the environment, else the current folder
    data_dir: str = "${paths.root_dir}/data"  # raw and prepared data sets
    work_dir: str = "${paths.root_dir}/workdir"  # everything GENSYN computes
    runs_dir: str = "${paths.work_dir}/runs"  # <runs_dir>/<stage>/<hash>/
    # compiled GPU kernels (Inductor, Triton, CuPy), shared by runs and jobs; off: the tools' own
    compile_cache_dir: str = "${paths.work_dir}/cache/compile"
