"""Package list for setuptools (everything else is in pyproject.toml).

The repository's top-level `configs/` folder is the source of truth for the training configs; it
is shipped inside the package as `smart_r1/configs/` (package-dir mapping), so an installed
`smart-r1` finds `--config cpu_demo` from any directory (`smart_r1.train.config.config_dirs`).
"""

from setuptools import find_packages, setup

CONFIG_PACKAGES = {"smart_r1.configs": "configs", "smart_r1.configs.ablations": "configs/ablations"}

setup(
    packages=find_packages(include=["smart_r1*", "rollout_workers*", "learner*"]) + list(CONFIG_PACKAGES),
    package_dir=CONFIG_PACKAGES,
    package_data={"": ["*.yaml", "*.textproto", "*.txt"]},
)
