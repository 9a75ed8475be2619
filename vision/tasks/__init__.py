"""Tasks: each folder owns one task end to end -- its training hooks (a :class:`vision.engine.Task` subclass), data
resolution, inference on files, evaluation, metrics and plots. Importing this package imports every public module
below it, so each task registers itself in :data:`vision.registry.TASKS`; a new task is a new folder here (or a
plugin's module), nothing else to edit. Tasks sit above the engine and the models, below the command line."""

from vision.registry import import_submodules

import_submodules(__name__, __path__)
