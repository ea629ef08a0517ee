"""Registered networks (MONAI-style networks/nets); importing this package registers every model."""
