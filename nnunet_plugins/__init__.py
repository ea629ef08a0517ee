"""nnU-Net v2 trainers for medmamba's networks (``nnUNetv2_train DATASET 3d_fullres 0 -tr MHSVMTrainer``).

- ``trainers``: one small trainer per paper, plus the epoch variants (``MHSVMTrainer_5epochs`` ...).
- ``base``: what every medmamba trainer shares (network from the plans builder, fp16-safe steps, plain checkpoints).
- ``discovery``: the startup hook that lets nnU-Net find them (through ``nnUNet_extTrainer``) with no setup.

Importing this package is cheap; ``trainers`` imports torch and nnunetv2.
"""
