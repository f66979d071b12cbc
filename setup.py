"""The package list, which pyproject.toml cannot express: every `sddkd.*` package, plus the repo's top-level
`presets/` folder shipped inside the package as `sddkd.presets`.

`[tool.setuptools.packages.find]` only finds folders under their own names (it would find `presets`, never
`sddkd.presets`), and an explicit list in pyproject.toml would miss each new subpackage. Everything else is in
pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["sddkd", "sddkd.*"]), "sddkd.presets"],
    package_dir={"sddkd.presets": "presets"},
)
