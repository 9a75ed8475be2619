"""Small task-agnostic utilities at the bottom layer: ``key=value`` parsing, run folders, atomic files, devices.

Anything that both the engine and the command line need lives here, so that no layer imports a higher one.
"""

from vision.utils.device import pick_device
from vision.utils.files import increment_dir, save_json, save_yaml
from vision.utils.keys import ArgumentError, merge, parse_overrides

__all__ = ["ArgumentError", "increment_dir", "merge", "parse_overrides", "pick_device", "save_json", "save_yaml"]
