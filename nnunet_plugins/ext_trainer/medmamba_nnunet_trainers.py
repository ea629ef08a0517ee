"""nnU-Net imports this as a top-level module while looking up ``-tr NAME``; the classes live in ``trainers``."""
from medmamba.nnunet_plugins.trainers import *  # noqa: F401,F403
