"""Demonstration data: the dataset format (readers, writer, validation, chunking) and collection from saved policies."""

from ncdpo.data.dataset import Dataset, Episode, check_fits_env, load_dataset, make_chunks, validate_dataset

__all__ = ["Dataset", "Episode", "check_fits_env", "load_dataset", "make_chunks", "validate_dataset"]
