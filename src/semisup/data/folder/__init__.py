"""The `folder` data set, a user's own images: scanning, decoding, the memory-mapped cache.

`scan` finds the layout and lists the files, `decode` turns one file into a uint8 array,
`cache` writes and memory-maps the decoded images, `dataset` ties them into an `ImageDataset`
and registers the `folder` loader. Importing this package registers it.
"""

from semisup.data.folder.dataset import load_folder

__all__ = ["load_folder"]
