"""Setuptools hook (everything else is in pyproject.toml): the wheel carries the repository's recipes/ and
calibration/ folders, which stay the source of truth at the top level, as pixtral_quant/_shipped/{recipes,calibration}
(pixtral_quant/assets.py: shipped_folder finds either). Setuptools' package-data only takes files inside a
package folder, hence this copy. An editable install reads the top-level folders directly and copies nothing."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("recipes", "calibration")  # pixtral_quant/assets.py: SHIPPED_FOLDERS


class BuildPyWithShipped(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        root = Path(__file__).resolve().parent
        for name in SHIPPED:
            target = Path(self.build_lib) / "pixtral_quant" / "_shipped" / name
            shutil.rmtree(target, ignore_errors=True)  # a stale build/ never leaks removed files into the wheel
            shutil.copytree(root / name, target, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildPyWithShipped})
