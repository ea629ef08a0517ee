"""The folder the startup hook lists in ``nnUNet_extTrainer`` (see ``medmamba.nnunet_plugins.discovery``)."""
