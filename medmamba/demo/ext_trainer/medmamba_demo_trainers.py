"""The demo's budgeted trainers, ``<Trainer>_demo``: nnU-Net imports this as a top-level module while looking up
``-tr NAME`` (``medmamba demo`` lists this folder in ``nnUNet_extTrainer``). The budget comes from the environment
variable ``MEDMAMBA_DEMO_BUDGET`` (JSON: ``trainers``, medmamba's or nnU-Net's own, and the ``recipe``, e.g.
``num_epochs``), which the demo sets from its configuration for every nnU-Net command it runs."""
import json
import os
from pathlib import Path

import nnunetv2
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

from medmamba.nnunet_plugins import trainers
from medmamba.nnunet_plugins.base import variant

SUFFIX = "_demo"


def _base(name: str):
    found = getattr(trainers, name, None) or recursive_find_python_class(
        str(Path(nnunetv2.__path__[0], "training", "nnUNetTrainer")), name, "nnunetv2.training.nnUNetTrainer")
    if found is None:
        raise RuntimeError(f"MEDMAMBA_DEMO_BUDGET names trainer {name!r}: neither medmamba's nor nnU-Net's")
    return found


_budget = json.loads(os.environ.get("MEDMAMBA_DEMO_BUDGET", "{}"))
for _trainer in _budget.get("trainers", []):
    globals()[_trainer + SUFFIX] = variant(_base(_trainer), _trainer + SUFFIX, __name__, **_budget["recipe"])
