"""Building timm networks for :mod:`vision.backbones.timm`: dynamic-size keywords, pretrained weights, stems.

- :func:`create` calls ``timm.create_model`` with the dynamic-size keywords a model takes (``dynamic_img_size`` and
  ``dynamic_img_pad`` for ViTs, ``dynamic_img_size`` alone for Swin, none for a CNN), found by what timm refuses.
- Pretrained weights come from the Hugging Face hub through timm. With ``VISION_OFFLINE=1`` nothing is fetched: the
  file is taken from the local hub cache (``$HF_HOME/hub``) or torch.hub's cache and handed to timm as a local file,
  and a file that is not there raises :class:`~vision.hub.download.OfflineError` naming ``timm/<arch>.<tag>``. A hub
  failure online raises :class:`~vision.hub.download.DownloadError` naming the model too.
- :func:`stem_pattern` is timm's own regex of a model's stem parameters (``group_matcher``), which decides which
  feature levels are only the stem (:mod:`vision.backbones._timm_layout`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from vision.hub.download import DownloadError, OfflineError, _offline

__all__ = ["create", "stem_pattern", "timm_name"]

#: the dynamic-size keywords tried in order: the ViT family takes both, Swin only the first, CNNs neither
_DYNAMIC = ({"dynamic_img_size": True, "dynamic_img_pad": True}, {"dynamic_img_size": True}, {})


def timm_name(arch: str, pretrained: bool | str) -> str:
    """timm's model name for ``arch`` and a pretrained tag (``"resnet50", "a1_in1k" -> "resnet50.a1_in1k"``)."""
    if isinstance(pretrained, str) and pretrained not in ("", "True"):
        return f"{arch}.{pretrained}"
    return arch


def create(arch: str, *, pretrained: bool | str = False, dynamic: bool = True, **kwargs: Any) -> tuple[nn.Module, bool]:
    """``timm.create_model`` for ``timm/<arch>`` (``pretrained`` a bool or a timm tag), with the dynamic-size keywords
    the model takes when ``dynamic`` (and the caller set none of them nor ``img_size``) and the weights policy of the
    module docstring. Returns the model and whether it was built to take any input size (``dynamic_img_size``, or
    the caller's own keywords).

    Raises:
        ValueError: an unknown pretrained tag (naming the known ones).
        OfflineError: ``VISION_OFFLINE=1`` and the weights are not in the local cache.
        DownloadError: the hub could not deliver the weights.
    """
    import timm

    name = timm_name(arch, pretrained)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    if pretrained and "file" not in overlay:  # the caller's own file needs no hub
        overlay.update(_cached_file(arch, name))
    if overlay:
        kwargs["pretrained_cfg_overlay"] = overlay
    tries = list(_DYNAMIC if dynamic and not any(k in kwargs for k in ("img_size", *_DYNAMIC[0])) else ({},))
    while True:
        extra = tries.pop(0)
        try:
            model = timm.create_model(name, pretrained=bool(pretrained), **extra, **kwargs)
            return model, bool(extra) or bool(kwargs.get("dynamic_img_size") or kwargs.get("strict_img_size") is False)
        except TypeError as err:  # a model without these keywords; any other TypeError is the caller's
            if not tries or not any(f"'{k}'" in str(err) for k in extra):
                raise
        except Exception as err:
            _raise_hub_error(err, name)
            raise


def _pretrained_cfg(arch: str, name: str) -> Any:
    from timm.models import get_pretrained_cfg, list_pretrained

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # a tag timm does not know for this architecture
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        tags = [n.split(".", 1)[1] for n in list_pretrained(f"{arch}.*")]
        raise ValueError(f"timm/{name} has no pretrained weights in timm; its tags: {', '.join(tags) or 'none'}")
    return cfg


def _cached_file(arch: str, name: str) -> dict[str, Any]:
    """timm's ``pretrained_cfg_overlay`` for ``name``'s weights: nothing online; offline, the cached file as timm's
    local ``file`` source (:class:`OfflineError` when it is not cached)."""
    cfg = _pretrained_cfg(arch, name)
    if not _offline():
        return {}
    full = f"timm/{arch}.{cfg.tag}" if cfg.tag else f"timm/{arch}"
    if cfg.file:
        return {}
    # the hub's cache first, then torch.hub's copy of the release URL (timm's older source)
    url_copy = (
        os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(cfg.url.split("?")[0])) if cfg.url else ""
    )
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in names:
            path = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(path, str) and os.path.isfile(path):
                return {"file": path, "source": ""}
        if url_copy and os.path.isfile(url_copy):
            return {"file": url_copy, "source": ""}
        raise OfflineError(
            f"VISION_OFFLINE is set and {full} (Hugging Face hub {repo}, {' or '.join(names)}) is not in the local "
            f"cache; expected it under {constants.HF_HUB_CACHE}"
        )
    if url_copy and os.path.isfile(url_copy):
        return {"file": url_copy, "source": ""}
    raise OfflineError(
        f"VISION_OFFLINE is set and {full} ({cfg.url}) is not in the local cache; expected it at {url_copy}"
    )


def _raise_hub_error(err: Exception, name: str) -> None:
    try:
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - timm without the hub client
        return
    if isinstance(err, HfHubHTTPError | LocalEntryNotFoundError):
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DownloadError(
            f"could not fetch the weights of timm/{name} from the Hugging Face hub: {first} "
            "(with VISION_OFFLINE=1 only the local cache is used)"
        ) from err


def stem_pattern(arch: str) -> str | None:
    """timm's regex of ``arch``'s stem parameters (``group_matcher(coarse=True)["stem"]``), or ``None`` when the model
    declares none. The model is built on the meta device (no memory, no initialisation cost)."""
    import timm

    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                model = timm.create_model(arch, pretrained=False)
            matcher = model.group_matcher(coarse=True)
        except Exception:  # a model that cannot be built on this device, or has no group_matcher
            continue
        stem = matcher.get("stem") if isinstance(matcher, dict) else None
        return stem if isinstance(stem, str) and stem else None
    return None
