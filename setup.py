"""Build hook: ship the recipes of ``zoo/`` inside the package (as ``vision/zoo/*.yaml``) in wheels and sdists.

Everything else is declared in pyproject.toml. In a source checkout (and an editable install) the recipes are read
from ``zoo/`` directly.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithRecipes(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "vision" / "zoo"
        target.mkdir(parents=True, exist_ok=True)
        for recipe in sorted(Path(__file__).parent.joinpath("zoo").glob("*.yaml")):
            shutil.copy2(recipe, target / recipe.name)


setup(cmdclass={"build_py": BuildPyWithRecipes})
