"""YubiaoYue/MedMamba's MedMamba-T: ``MedMamba.py``'s VSSM at the configuration its ``medmamba_t`` line builds
(see ``_medmamba.py``), on the paper's 224 x 224 RGB input; ours by the ``paper`` preset."""
from __future__ import annotations

from official import Recipe
from official._medmamba import FOLDER, REPO, cases

RECIPE = Recipe("medmamba_t", REPO, FOLDER, lambda checkout: cases(checkout, "medmamba_t"))
