"""Package layout for setuptools (metadata: pyproject.toml).

The configs stay in ``conf/`` at the repository root (``python launch.py`` reads them there);
the wheel ships them as ``gensyn/conf`` so the ``gensyn`` command works from any folder
(:data:`gensyn.app.cli.CONF_DIR` finds either). ``hydra_plugins`` is a namespace package (no
``__init__.py``) that Hydra scans for the GENSYN launchers and the ``$GENSYN_CONFIG_DIR``
search path; it ships too.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["gensyn", "gensyn.*"]),
        "gensyn.conf",
        "hydra_plugins",
        "hydra_plugins.gensyn_launcher",
        "hydra_plugins.gensyn_site",
    ],
    package_dir={"gensyn.conf": "conf"},
    package_data={"gensyn.conf": ["*.yaml", "**/*.yaml"]},
)
