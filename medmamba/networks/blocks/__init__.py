"""Network blocks (MONAI-style networks/blocks)."""
