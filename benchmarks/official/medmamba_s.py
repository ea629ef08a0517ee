"""YubiaoYue/MedMamba's MedMamba-S: ``MedMamba.py``'s VSSM at the configuration its ``medmamba_s`` line builds
(see ``_medmamba.py``), on the paper's 224 x 224 RGB input; ours by the ``paper`` preset."""
from __future__ import annotations

from official import Recipe
from official._medmamba import FOLDER, REPO, cases

RECIPE = Recipe("medmamba_s", REPO, FOLDER, lambda checkout: cases(checkout, "medmamba_s"))
