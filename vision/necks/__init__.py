"""Necks: modules that map declared features to declared features (``in_specs`` -> ``specs``), shared by several
model families and registered in :data:`vision.registry.NECKS` (``fpn``, ``pafpn``, ``ssd_extra``, ...).

Where parts live: a neck works on any backbone's declared features and serves any head, so every neck is here; a
head is tied to its family's targets, loss and decoding, so each head lives in its model family's package
(``vision/models/detection/yolo/head.py``, ``.../rcnn/parts.py``, ``.../ssd/model.py``).
"""

from vision.registry import import_submodules

import_submodules(__name__, __path__)
