"""bowang-lab/U-Mamba's U-Mamba_Enc (``umamba/nnunetv2/nets/UMambaEnc_{2d,3d}.py``): the cases of
:mod:`official.umamba_bot`, with the Enc networks and ``UMambaEncTrainer``."""
from official import Recipe
from official.umamba_bot import FOLDER, REPO, umamba_cases

RECIPE = Recipe("umamba_enc", REPO, FOLDER, lambda checkout: umamba_cases(checkout, "Enc"))
