"""Classification and restoration training loops (MONAI datasets and loaders, AMP on CUDA, checkpoints with
resume, seeded and reproducible on CPU) and the files they read and write.

Input layouts (``medmamba make-data cls2d|restore`` writes them)

- Classification ``DIR``: ``DIR/train/images/<case><ext>`` with ``DIR/train/labels.csv`` (``case,label``, label a
  class name), optionally ``DIR/test/`` alike, optionally ``DIR/dataset.json`` with ``"classes": [...]`` (the
  class order; default: sorted class names of the training labels). Images: any format MONAI's ``LoadImage``
  reads (NIfTI, PNG, ...), 2D, all with the same number of channels.
- Restoration ``DIR``: ``DIR/train/clean/<case><ext>`` (and ``DIR/train/degraded/<case><ext>`` for paired
  training), ``DIR/test/clean`` (and ``DIR/test/degraded``), optionally ``DIR/dataset.json`` with
  ``"degradation"``. Without ``--degradation`` training uses the stored pairs; with it the clean images are
  degraded on the fly (``medmamba.transforms.degradations``) and, when ``test/degraded`` is missing, the test
  images are degraded once with the run's seed.

Output folder ``OUT`` (``--out``)

- ``checkpoint_latest.pt`` / ``checkpoint_best.pt``: ``torch.load(path, weights_only=True)`` gives a dict with
  ``model`` (state dict), ``optimizer``, ``scaler``, ``epoch`` (epochs done), ``best``,
  ``history`` (one dict per epoch: ``train_loss`` and the validation metric), ``config`` (the run's arguments).
- ``history.json`` and ``curves.png`` (loss and validation metric per epoch).
- Classification predictions for the evaluation harness (``medmamba evaluate cls``):
  ``OUT/predictions.csv`` with columns ``case``, ``prob_<class>`` for each class in class order, ``pred`` (the
  class name of highest probability); ``OUT/labels.csv`` with ``case,label`` (the reference, same cases).
- Restoration predictions (``medmamba evaluate restore``): ``OUT/predictions/<case>.nii.gz``, one per test
  case, same name, size, spacing, origin and direction as the reference ``DIR/test/clean/<case><ext>``, in the
  reference's intensity units; ``OUT/inputs/<case>.nii.gz`` holds the degraded inputs that were restored.
"""
from medmamba.training.classification import train_classifier
from medmamba.training.restoration import train_restoration

__all__ = ["train_classifier", "train_restoration"]
