"""Demonstration data: the dataset format, collection from saved policies, behaviour-cloning pre-training."""

from ncdpo.data.dataset import Dataset, Episode, check_fits_env, load_dataset, make_chunks, validate_dataset

__all__ = ["Dataset", "Episode", "check_fits_env", "load_dataset", "make_chunks", "validate_dataset"]
