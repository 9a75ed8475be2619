"""SSD on any backbone (torchvision's SSD head over the backbone's levels plus
:class:`~vision.necks.ssd_extra.SSDExtraLayers`), and torchvision's ``ssd300_vgg16`` /
``ssdlite320_mobilenet_v3_large``."""

from vision.models.detection.ssd.model import SSD

__all__ = ["SSD"]
