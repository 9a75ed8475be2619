"""Weight cards, verified downloads and checkpoint key adapters."""

from vision.hub.adapt import LoadReport, adapt_state_dict, load_into
from vision.hub.cards import Preprocess, WeightsCard, imagenet_categories
from vision.hub.download import (
    ChecksumError,
    DownloadError,
    OfflineError,
    WeightsFileError,
    cache_dir,
    cache_path,
    download,
    load_state_dict_file,
    sha256_file,
)

__all__ = [
    "ChecksumError",
    "DownloadError",
    "LoadReport",
    "OfflineError",
    "Preprocess",
    "WeightsCard",
    "WeightsFileError",
    "adapt_state_dict",
    "cache_dir",
    "cache_path",
    "download",
    "imagenet_categories",
    "load_into",
    "load_state_dict_file",
    "sha256_file",
]
