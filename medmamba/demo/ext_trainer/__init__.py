"""Folder that ``medmamba demo`` lists in ``nnUNet_extTrainer`` for its budgeted trainers."""
