"""What pyproject.toml cannot say: the top-level kernels/, datasets/, evaluation/ and nnunet_plugins/ folders are
installed as medmamba.* packages, nnU-Net's trainer discovery .pth, and the catalog's measurements shipped inside
the package (medmamba/benchmark_results, read by medmamba.catalog.results_dir)."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

ROOT = Path(__file__).parent
CATALOG_RESULTS = ("catalog-cpu.json", "catalog-cuda.json", "equivalence.json")  # medmamba.catalog reads these

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
    """Regular installs: the .pth sits in site-packages beside medmamba/ (``sitedir`` at interpreter start), and
    the catalog's measurements are copied from benchmarks/results into the package."""

    def run(self):
        super().run()
        hook = "os.path.join(sitedir, 'medmamba', 'nnunet_plugins', 'discovery.py')"
        Path(self.build_lib, discovery["PTH_NAME"]).write_text(discovery["pth_line"](hook))
        packaged = Path(self.build_lib, "medmamba", "benchmark_results")
        packaged.mkdir(parents=True, exist_ok=True)
        for name in CATALOG_RESULTS:
            if (ROOT / "benchmarks" / "results" / name).is_file():
                shutil.copy2(ROOT / "benchmarks" / "results" / name, packaged / name)


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
    packages=packages,
    package_dir=package_dir,
    cmdclass={"build_py": build_py_with_discovery_pth, "editable_wheel": editable_wheel_with_discovery_pth},
)
