"""Data sets, splits and sampling. Importing this package registers every data set."""

from semisup.data import digits, folder, standard  # noqa: F401  (registration)
from semisup.data.base import DATASETS, ImageDataset
from semisup.data.ssl import SSLData, build_ssl_data

__all__ = ["DATASETS", "ImageDataset", "SSLData", "build_ssl_data"]
