from pathlib import Path

from setuptools import setup

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
)
