from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

ROOT = Path(__file__).parent
version = {}
exec((ROOT / "medmamba" / "_version.py").read_text(), version)

# The generic top-level folders are installed under the medmamba namespace only.
SUBPACKAGES = {
    "medmamba.kernels": "kernels",
    "medmamba.datasets": "datasets",
    "medmamba.evaluation": "evaluation",
    "medmamba.nnunet_plugins": "nnunet_plugins",
}


def find_packages_under(root_pkg, folder):
    base = ROOT / folder
    return [
        ".".join([root_pkg, *p.parent.relative_to(base).parts])
        for p in sorted(base.rglob("__init__.py"))
    ]


# nnU-Net trainer discovery: a startup hook (.pth) in site-packages, see nnunet_plugins/discovery.py.
discovery = {"__file__": str(ROOT / "nnunet_plugins" / "discovery.py")}
exec((ROOT / "nnunet_plugins" / "discovery.py").read_text(), discovery)


class build_py_with_discovery_pth(build_py):
    """Regular installs: the .pth sits in site-packages beside medmamba/ (``sitedir`` at interpreter start)."""

    def run(self):
        super().run()
        hook = "os.path.join(sitedir, 'medmamba', 'nnunet_plugins', 'discovery.py')"
        Path(self.build_lib, discovery["PTH_NAME"]).write_text(discovery["pth_line"](hook))


class DiscoveryPthStrategy:
    """Wraps setuptools' editable strategy: also writes the .pth, pointing at this checkout's discovery.py."""

    def __init__(self, strategy):
        self.strategy = strategy

    def __enter__(self):
        self.strategy.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self.strategy.__exit__(*exc_info)

    def __call__(self, wheel, files, mapping):
        self.strategy(wheel, files, mapping)
        hook = repr(str(ROOT.resolve() / "nnunet_plugins" / "discovery.py"))
        wheel.writestr(discovery["PTH_NAME"], discovery["pth_line"](hook))


class editable_wheel_with_discovery_pth(editable_wheel):
    def _select_strategy(self, *args, **kwargs):
        return DiscoveryPthStrategy(super()._select_strategy(*args, **kwargs))


packages = find_packages_under("medmamba", "medmamba")
package_dir = {"medmamba": "medmamba"}
for pkg, folder in SUBPACKAGES.items():
    for sub in find_packages_under(pkg, folder):
        packages.append(sub)
        package_dir[sub] = str(Path(folder, *sub.split(".")[2:]))

setup(
    name="medmamba",
    version=version["__version__"],
    description="Mamba (selective state space) networks for medical imaging on stock nnU-Net",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    include_package_data=True,
    package_data={"": ["*.json", "*.yaml", "*.css", "*.js", "*.html"]},
    install_requires=[
        "torch>=2.4",
        "triton>=3.0; platform_system == 'Linux'",
        "numba>=0.60",
        "nnunetv2>=2.8",
        "monai>=1.4",
        "SimpleITK>=2.3",
        "nibabel>=5.0",
        "batchgenerators>=0.25",
        "pynrrd>=1.0",
        "safetensors>=0.4",
        "numpy",
        "scipy",
        "scikit-image",
        "matplotlib",
        "tqdm",
        "pillow",
        "pyyaml",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist", "scikit-learn", "selenium>=4.10"],
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9", "mkdocstrings[python]>=0.25", "mkdocs-gen-files>=0.5"],
    },
    entry_points={"console_scripts": ["medmamba = medmamba.cli:main"]},
    cmdclass={"build_py": build_py_with_discovery_pth, "editable_wheel": editable_wheel_with_discovery_pth},
)
