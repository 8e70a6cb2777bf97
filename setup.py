"""Ship the top-level templates/ and runtime_c/ folders inside the wheel as graphc/_data/.

The design card keeps them at the repository's top level; a non-editable install must still find
them, so build_py copies them into the package (graphc/_resources.py looks in both places).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        dest = Path(self.build_lib) / "graphc" / "_data"
        for folder in ("templates", "runtime_c"):
            target = dest / folder
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(ROOT / folder, target, ignore=shutil.ignore_patterns("*.o", "*.so", "__pycache__"))


setup(cmdclass={"build_py": BuildPyWithData})
