"""Batched detection augmentation on the GPU (or any device): the CPU only decodes.

:class:`GpuAugment` maps ``(images uint8 [B, 3, H, W], targets)`` to ``(images float [B, 3, h, w] normalised,
targets)`` with per-sample random parameters, transforming boxes and masks consistently.

Design -- a fixed number of kernel launches per batch, whatever ``B``:

1. **One warp for everything geometric.** Letterbox, scale, rotation, shear, translation and both flips compose into
   one affine map per sample: ``F.affine_grid`` builds all grids and *one* batched ``F.grid_sample`` warps the batch.
   With mosaic, each output pixel comes from one of 4 batch images (piecewise affine): the batch is then laid out as
   one tall image ``[1, 3, B * (H + 1), W]`` (each image followed by a row of zeros), so a single ``F.grid_sample``
   call still reads every output pixel from whichever image it comes from -- a gather inside the same call, not a
   Python loop. Pixels outside their source image read zeros, i.e. the ``fill`` colour (images are shifted by
   ``-fill`` first).
2. **One colour transform.** Hue rotation (about the grey axis in YIQ space), saturation (scaling of the chroma
   plane), value (gain), the ``fill`` shift, ``/255`` and mean/std normalisation fold into one ``3x3`` matrix plus bias
   per sample: one ``baddbmm`` and one per-channel clamp.
3. **Masks ride along as one instance-id map** (``0`` background, ``k + 1`` instance ``k``) warped by the same grid
   with nearest sampling (a second ``grid_sample``). Boxes are then recomputed from the warped map with
   ``scatter_reduce`` (tight box of the visible pixels, so a rotated object keeps a tight box), and an instance is
   kept when at least ``min_visibility`` of its expected (warped) area is visible. Overlapping input masks: shared
   pixels go to the highest-index instance (as if painted in order).
4. **Without masks** each box becomes the hull of its 4 transformed corners, clipped to the output; it is kept when
   the clipped hull keeps ``min_visibility`` of the hull's area.

In both cases boxes narrower or lower than ``min_size`` pixels are dropped. Random parameters are drawn with one
``torch.rand`` (and one ``torch.randint`` for mosaic partners) from an optional ``torch.Generator``; they are returned
by :meth:`GpuAugment.sample_params` and can be replayed with :meth:`GpuAugment.apply`. :meth:`GpuAugment.apply` works
on fixed-shape padded targets with no host synchronisation and compiles with ``torch.compile``. The list-of-dicts
interface adds the (vectorised) padding/unpadding around it: one host sync for the per-image box counts.

Example:
    >>> aug = GpuAugment(size=640, mosaic=0.5, degrees=10.0).to("cuda")
    >>> images, targets = next(iter(loader))  # uint8 [B, 3, H, W], list of {"boxes", "labels"[, "masks"]}
    >>> x, targets = aug(images.cuda(non_blocking=True), [{k: v.cuda() for k, v in t.items()} for t in targets])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.data._gpu_parts import _areas, _boxes_from_map, _pad_images, _pad_masks, _unpad
from vision.data.collate import instance_map, pad_targets
from vision.data.knobs import check_knobs
from vision.data.transforms import BOX_FIELDS

__all__ = ["AugParams", "GpuAugment"]

_YIQ = ((0.299, 0.587, 0.114), (0.595716, -0.274453, -0.321263), (0.211456, -0.522591, 0.311135))


@dataclass
class AugParams:
    """Per-sample random parameters of one batch (every tensor has leading dimension ``B``).

    Attributes:
        flip_h, flip_v: bool ``[B]`` -- flip the output horizontally / vertically.
        scale: ``[B]`` zoom factor on top of the letterbox scale.
        angle: ``[B]`` rotation in degrees (positive turns clockwise on screen, where y points down).
        shear: ``[B, 2]`` shear angles in degrees (x, y).
        translate: ``[B, 2]`` shift of the output in pixels (x, y).
        hsv: ``[B, 3]`` hue rotation (fraction of a full turn), saturation gain, value gain.
        mosaic: bool ``[B]`` -- the sample is a mosaic of 4 images.
        partners: int64 ``[B, 4]`` -- batch index of the image in each mosaic slot (top-left, top-right, bottom-left,
            bottom-right); slot 0 is the sample itself and the only one used without mosaic.
        center: ``[B, 2]`` mosaic centre on the ``2w x 2h`` mosaic canvas (x, y).
    """

    flip_h: Tensor
    flip_v: Tensor
    scale: Tensor
    angle: Tensor
    shear: Tensor
    translate: Tensor
    hsv: Tensor
    mosaic: Tensor
    partners: Tensor
    center: Tensor

    def to(self, device: torch.device | str) -> AugParams:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def _pair(value: float | Sequence[float], around: float = 0.0) -> tuple[float, float]:
    if isinstance(value, int | float):
        return (around - float(value), around + float(value))
    lo, hi = value
    return (float(lo), float(hi))


class GpuAugment(nn.Module):
    """Batched, per-sample-random detection augmentation (see the module docstring for the design).

    Args:
        size: output ``h = w`` or ``(h, w)``; every image is first letterboxed (scaled to fit, centred) into it.
        hflip, vflip: flip probabilities.
        scale: zoom factor range (a float ``s`` means ``(1 - s, 1 + s)``).
        translate: shift range as a fraction of the output side (``t`` means ``(-t, t)``).
        degrees: rotation range in degrees (``d`` means ``(-d, d)``).
        shear: shear range in degrees (``d`` means ``(-d, d)``), drawn independently for x and y.
        hue: hue rotation range, fraction of a full turn (``0.015`` = +-5.4 degrees).
        saturation, value: gain ranges (``0.7`` means gains in ``(0.3, 1.7)``).
        mosaic: probability that a sample becomes a mosaic of itself and 3 random images of the batch (on a ``2h x
            2w`` canvas around a random centre, then zoomed/rotated like any sample).
        fill: grey level of the area outside the images (letterbox bars, warp borders).
        mean, std: normalisation in [0, 1] units; the defaults give images in [0, 1].
        min_size: boxes narrower or lower than this (output pixels) are dropped.
        min_visibility: an instance keeping less than this fraction of its warped area in the output is dropped.

    Call: ``aug(images, targets, *, generator=None) -> (images, targets)`` where ``images`` is ``uint8 [B, 3, H, W]``
    (or a list of ``uint8 [3, H_i, W_i]`` of different sizes: one copy per image) and ``targets`` either

    - a list of dicts ``{"boxes": float32 [N, 4] xyxy pixels, "labels": int64 [N], "masks": uint8 [N, H, W]
      (optional), ...}`` -> a list of dicts with the same keys (boxes, labels, masks and :data:`BOX_FIELDS` of the
      surviving instances; other entries such as ``image_id`` copied from the sample's own target), or
    - a padded dict ``{"boxes": [B, M, 4], "labels": [B, M], "valid": bool [B, M], "instance_map": [B, H, W]
      (optional)}`` (see :func:`vision.data.pad_targets`) -> a padded dict with ``M' = 4M`` slots when mosaic is on
      (``M`` otherwise), ``instance_map`` ``int32 [B, h, w]`` whose value ``k + 1`` marks slot ``k``.

    Output images are ``float32 [B, 3, h, w]``: ``(pixel / 255 - mean) / std``.
    """

    def __init__(
        self,
        *,
        size: int | tuple[int, int] = 640,
        hflip: float = 0.5,
        vflip: float = 0.0,
        scale: float | Sequence[float] = (0.5, 1.5),
        translate: float | Sequence[float] = 0.1,
        degrees: float | Sequence[float] = 0.0,
        shear: float | Sequence[float] = 0.0,
        hue: float = 0.015,
        saturation: float = 0.7,
        value: float = 0.4,
        mosaic: float = 0.0,
        fill: float = 114.0,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        min_size: float = 2.0,
        min_visibility: float = 0.1,
    ) -> None:
        super().__init__()
        check_knobs({k: v for k, v in locals().items() if k not in ("self", "size", "__class__")})
        self.size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.hflip, self.vflip, self.mosaic = float(hflip), float(vflip), float(mosaic)
        self.scale = _pair(scale, 1.0) if isinstance(scale, int | float) else _pair(scale)
        self.translate, self.degrees, self.shear = _pair(translate), _pair(degrees), _pair(shear)
        self.hue, self.saturation, self.value = _pair(hue), _pair(saturation, 1.0), _pair(value, 1.0)
        self.fill = float(fill)
        self.min_size, self.min_visibility = float(min_size), float(min_visibility)
        self.slots = 4 if self.mosaic > 0 else 1
        yiq = torch.tensor(_YIQ, dtype=torch.float64)
        self.register_buffer("_yiq", yiq.float(), persistent=False)
        self.register_buffer("_yiq_inv", torch.linalg.inv(yiq).float(), persistent=False)
        mean_t, std_t = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        self.register_buffer("_mean", mean_t, persistent=False)
        self.register_buffer("_std", std_t, persistent=False)
        self.register_buffer("_lo", (-mean_t / std_t).view(1, 3, 1), persistent=False)
        self.register_buffer("_hi", ((1.0 - mean_t) / std_t).view(1, 3, 1), persistent=False)

    def extra_repr(self) -> str:
        return (f"size={self.size}, hflip={self.hflip}, vflip={self.vflip}, scale={self.scale}, "
                f"translate={self.translate}, degrees={self.degrees}, shear={self.shear}, hue={self.hue}, "
                f"saturation={self.saturation}, value={self.value}, mosaic={self.mosaic}")  # fmt: skip

    # ------------------------------------------------------------------------------------------------ parameters
    def sample_params(
        self, batch_size: int, *, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> AugParams:
        """Draw the random parameters of a batch (on ``generator``'s device, then moved to ``device``)."""
        B = int(batch_size)
        gen_device = generator.device if generator is not None else (device or "cpu")
        u = torch.rand(B, 14, generator=generator, device=gen_device)
        partners = torch.randint(0, max(B, 1), (B, 4), generator=generator, device=gen_device)
        partners[:, 0] = torch.arange(B, device=gen_device)

        def lerp(x: Tensor, rng: tuple[float, float]) -> Tensor:
            return rng[0] + (rng[1] - rng[0]) * x

        h, w = self.size
        params = AugParams(
            flip_h=u[:, 0] < self.hflip,
            flip_v=u[:, 1] < self.vflip,
            scale=lerp(u[:, 2], self.scale),
            angle=lerp(u[:, 3], self.degrees),
            shear=torch.stack([lerp(u[:, 4], self.shear), lerp(u[:, 5], self.shear)], 1),
            translate=torch.stack([lerp(u[:, 6], self.translate) * w, lerp(u[:, 7], self.translate) * h], 1),
            hsv=torch.stack([lerp(u[:, 8], self.hue), lerp(u[:, 9], self.saturation), lerp(u[:, 10], self.value)], 1),
            mosaic=u[:, 11] < self.mosaic,
            partners=partners,
            center=torch.stack([(0.5 + u[:, 12]) * w, (0.5 + u[:, 13]) * h], 1),
        )
        return params.to(device) if device is not None else params

    # ------------------------------------------------------------------------------------------------- geometry
    def _geometry(self, p: AugParams, src_hw: Tensor) -> dict[str, Tensor]:
        """Affine canvas->output ``(lin [B,2,2], t [B,2])`` and per-slot placements ``[B, S]`` (source->canvas)."""
        h, w = self.size
        S = self.slots
        mosaic = p.mosaic
        cx = torch.where(mosaic, float(w), w / 2.0)
        cy = torch.where(mosaic, float(h), h / 2.0)
        a = torch.deg2rad(p.angle)
        cos, sin = torch.cos(a), torch.sin(a)
        tx, ty = torch.tan(torch.deg2rad(p.shear[:, 0])), torch.tan(torch.deg2rad(p.shear[:, 1]))
        s = p.scale
        # L = Rot @ Shear @ s  (positive angles turn clockwise on screen, where y points down)
        l00 = (cos - sin * ty) * s
        l01 = (cos * tx - sin) * s
        l10 = (sin + cos * ty) * s
        l11 = (sin * tx + cos) * s
        fx = torch.where(p.flip_h, -1.0, 1.0)
        fy = torch.where(p.flip_v, -1.0, 1.0)
        lin = torch.stack([torch.stack([fx * l00, fx * l01], -1), torch.stack([fy * l10, fy * l11], -1)], -2)
        ox = fx * (w / 2.0 + p.translate[:, 0]) + torch.where(p.flip_h, float(w), 0.0)
        oy = fy * (h / 2.0 + p.translate[:, 1]) + torch.where(p.flip_v, float(h), 0.0)
        t = torch.stack([ox - lin[:, 0, 0] * cx - lin[:, 0, 1] * cy, oy - lin[:, 1, 0] * cx - lin[:, 1, 1] * cy], -1)
        # placements: source edge coords -> canvas: q = l * src + o
        part = p.partners[:, :S]
        hs, ws = src_hw[part, 0], src_hw[part, 1]  # [B, S]
        lb = torch.minimum(w / ws, h / hs)
        j = torch.arange(S, device=hs.device)
        jx, jy = (j % 2).to(hs.dtype), (j // 2).to(hs.dtype)
        m = mosaic[:, None]
        px = torch.where(m, p.center[:, :1] - (1 - jx) * lb * ws, (w - lb * ws) / 2)
        py = torch.where(m, p.center[:, 1:] - (1 - jy) * lb * hs, (h - lb * hs) / 2)
        active = m | (torch.arange(S, device=hs.device) == 0)
        return {"lin": lin, "t": t, "center": p.center, "lb": lb, "px": px, "py": py, "part": part, "hs": hs,
                "ws": ws, "active": active}  # fmt: skip

    def _theta(self, g: dict[str, Tensor], Hc: int, Wc: int) -> Tensor:
        """``[B, 2, 3]`` for ``F.affine_grid``: normalised output coords -> normalised source coords (no mosaic)."""
        h, w = self.size
        lin, t = g["lin"], g["t"]
        det = lin[:, 0, 0] * lin[:, 1, 1] - lin[:, 0, 1] * lin[:, 1, 0]
        i00, i01, i10, i11 = lin[:, 1, 1] / det, -lin[:, 0, 1] / det, -lin[:, 1, 0] / det, lin[:, 0, 0] / det
        lb, px, py = g["lb"][:, 0], g["px"][:, 0], g["py"][:, 0]
        # output pixel p = (n_out + 1) * (w, h) / 2; source s = (inv @ (p - t) - (px, py)) / lb; n_src = 2 s / size - 1
        ox, oy, sx, sy = w / 2.0, h / 2.0, 2.0 / Wc, 2.0 / Hc
        dx, dy = ox - t[:, 0], oy - t[:, 1]
        qx, qy = i00 * dx + i01 * dy, i10 * dx + i11 * dy
        row0 = torch.stack([i00 * (sx * ox), i01 * (sx * oy), sx * (qx - px)], -1) / lb[:, None]
        row1 = torch.stack([i10 * (sy * ox), i11 * (sy * oy), sy * (qy - py)], -1) / lb[:, None]
        theta = torch.stack([row0, row1], 1)
        return theta - torch.stack([torch.zeros_like(theta[:, :, 0]), torch.zeros_like(theta[:, :, 0]),
                                    torch.ones_like(theta[:, :, 0])], -1)  # fmt: skip

    def _grid(self, g: dict[str, Tensor], B: int, Hc: int, Wc: int) -> tuple[Tensor, Tensor]:
        """Mosaic: sampling grid ``[1, B*h, w, 2]`` into the tall batch image, and the slot of every output pixel."""
        h, w = self.size
        dev = g["lin"].device
        lin, t = g["lin"], g["t"]
        det = lin[:, 0, 0] * lin[:, 1, 1] - lin[:, 0, 1] * lin[:, 1, 0]
        i00, i01 = lin[:, 1, 1] / det, -lin[:, 0, 1] / det
        i10, i11 = -lin[:, 1, 0] / det, lin[:, 0, 0] / det
        u = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5).view(1, 1, w)
        v = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5).view(1, h, 1)
        du, dv = u - t[:, 0].view(B, 1, 1), v - t[:, 1].view(B, 1, 1)
        qx = i00.view(B, 1, 1) * du + i01.view(B, 1, 1) * dv  # canvas coordinates [B, h, w]
        qy = i10.view(B, 1, 1) * du + i11.view(B, 1, 1) * dv
        mx, my = g["center"][:, 0].view(B, 1, 1), g["center"][:, 1].view(B, 1, 1)  # quadrant split
        slot = (qx >= mx).long() + 2 * (qy >= my).long()
        slot = slot * g["active"][:, 1:2].view(B, 1, 1).long()  # non-mosaic samples: slot 0 everywhere
        per_slot = torch.stack([g["lb"], g["px"], g["py"], g["part"].to(torch.float32), g["hs"], g["ws"]], -1)
        sel = torch.gather(per_slot, 1, slot.view(B, h * w, 1).expand(B, h * w, 6)).view(B, h, w, 6)
        lb, px, py, z, hs, ws = sel.unbind(-1)
        sx = (qx - px) / lb
        sy = (qy - py) / lb
        outside = (sx < -0.5) | (sx > ws + 0.5) | (sy < -0.5) | (sy > hs + 0.5)
        sx = torch.where(outside, -4.0, sx)  # far left of every image: all taps read the zero padding
        gx = sx * (2.0 / Wc) - 1.0
        gy = (z * (Hc + 1) + sy) * (2.0 / (B * (Hc + 1))) - 1.0
        grid = torch.stack([gx, gy], -1).view(1, B * h, w, 2)
        return grid, slot

    # ---------------------------------------------------------------------------------------------------- colour
    def _colour(self, p: AugParams) -> tuple[Tensor, Tensor]:
        """Per-sample ``M [B, 3, 3]`` and bias ``[B, 3, 1]`` from fill-shifted 0..255 pixels to normalised output."""
        B = p.hsv.shape[0]
        dev = p.hsv.device
        phi = p.hsv[:, 0] * (2 * math.pi)
        c, s = torch.cos(phi), torch.sin(phi)
        sat, val = p.hsv[:, 1], p.hsv[:, 2]
        zero, one = torch.zeros_like(c), torch.ones_like(c)
        rot = torch.stack([torch.stack([one, zero, zero], -1), torch.stack([zero, sat * c, -sat * s], -1),
                           torch.stack([zero, sat * s, sat * c], -1)], -2)  # fmt: skip
        m = val.view(B, 1, 1) * (self._yiq_inv.to(dev) @ rot @ self._yiq.to(dev))
        mean, std = self._mean.to(dev), self._std.to(dev)
        m = m * (1.0 / (255.0 * std)).view(1, 3, 1)
        bias = (m.sum(-1, keepdim=True) * self.fill) - (mean / std).view(1, 3, 1)
        return m, bias

    # ------------------------------------------------------------------------------------------------ the warp
    def apply(
        self,
        images: Tensor,
        padded: dict[str, Tensor],
        params: AugParams,
        *,
        src_hw: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Augment with given parameters: fixed shapes in and out, no host synchronisation (``torch.compile``-able).

        Args:
            images: ``uint8`` (or float 0..255) ``[B, 3, H, W]``.
            padded: ``{"boxes": [B, M, 4], "labels": [B, M], "valid": bool [B, M]}`` plus optional
                ``"instance_map": [B, H, W]`` and per-box fields ``[B, M]``.
            params: from :meth:`sample_params`.
            src_hw: true ``(height, width)`` per image ``[B, 2]`` when images were padded to a common size.

        Returns:
            ``(float32 [B, 3, h, w], padded targets with M' = slots * M)``.
        """
        B, C, Hc, Wc = images.shape
        h, w = self.size
        S = self.slots
        dev = images.device
        if src_hw is None:  # no host->device copy: fills only
            src_hw = torch.stack([torch.full((B,), float(Hc), device=dev), torch.full((B,), float(Wc), device=dev)], 1)
        src_hw = src_hw.to(dev, torch.float32)
        g = self._geometry(params, src_hw)
        m, bias = self._colour(params)
        if S == 1:  # no mosaic: one affine per sample -> F.affine_grid + a batched F.grid_sample
            grid = F.affine_grid(self._theta(g, Hc, Wc), [B, C, h, w], align_corners=False)
            slot = None
            if torch.compiler.is_compiling():
                shifted = images.to(torch.float32) - self.fill
            else:  # eager: one pass, uint8 -> float32 - fill
                shifted = torch.sub(images, self.fill, out=torch.empty(images.shape, device=dev))
            warped = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            warped = warped.view(B, C, h * w)
        else:  # mosaic: a piecewise-affine map into the tall batch image, one F.grid_sample for the whole batch
            grid, slot = self._grid(g, B, Hc, Wc)
            tall = torch.empty(C, B, Hc + 1, Wc, device=dev, dtype=torch.float32)
            tall[:, :, Hc].zero_()  # the separator rows
            body = tall[:, :, :Hc]
            if torch.compiler.is_compiling():  # dynamo rejects out= views; inductor fuses the two ops anyway
                body.copy_(images.permute(1, 0, 2, 3))
                body.sub_(self.fill)
            else:  # eager: one pass, uint8 -> float32 - fill
                torch.sub(images.permute(1, 0, 2, 3), self.fill, out=body)
            warped = F.grid_sample(tall.view(1, C, B * (Hc + 1), Wc), grid, mode="bilinear", padding_mode="zeros",
                                   align_corners=False)  # fmt: skip
            warped = warped.view(C, B, h * w).transpose(0, 1)
        out = torch.baddbmm(bias, m, warped)
        out = out.clamp_(min=self._lo.to(dev), max=self._hi.to(dev)).view(B, C, h, w)

        # --- targets: gather every slot's source boxes
        M = padded["boxes"].shape[1]
        part = g["part"]  # [B, S]
        boxes = padded["boxes"].to(dev, torch.float32)[part]  # [B, S, M, 4]
        valid = padded["valid"].to(dev)[part] & g["active"][:, :, None]
        lin, t = g["lin"], g["t"]
        lb, px, py = g["lb"], g["px"], g["py"]
        # total source->output affine per slot: p = lin @ (lb * s + (px, py)) + t
        tot_lin = lin[:, None] * lb[:, :, None, None]  # [B, S, 2, 2]
        tot_t = (lin[:, None] @ torch.stack([px, py], -1)[..., None]).squeeze(-1) + t[:, None]  # [B, S, 2]
        result: dict[str, Tensor] = {}
        if "instance_map" in padded:
            ids = padded["instance_map"].to(dev)
            if slot is None:
                wid = F.grid_sample(ids.to(torch.float32)[:, None], grid, mode="nearest", padding_mode="zeros",
                                    align_corners=False)  # fmt: skip
                wid = wid.view(B, h, w).round().long()
                slot = torch.zeros_like(wid)
            else:
                tall_ids = torch.empty(B, Hc + 1, Wc, device=dev, dtype=torch.float32)
                tall_ids[:, Hc].zero_()
                tall_ids[:, :Hc] = ids
                wid = F.grid_sample(tall_ids.view(1, 1, B * (Hc + 1), Wc), grid, mode="nearest", padding_mode="zeros",
                                    align_corners=False).view(B, h, w).round().long()  # fmt: skip
            # bin of every output pixel: slot * (M + 1) + local id (0 = background of that slot)
            new_boxes, area_out = _boxes_from_map(slot * (M + 1) + wid, S, M)
            area_in = _areas(ids, M)  # [B, M] visible pixels in each source image
            det = (tot_lin[..., 0, 0] * tot_lin[..., 1, 1] - tot_lin[..., 0, 1] * tot_lin[..., 1, 0]).abs()  # [B, S]
            expected = area_in[part] * det[:, :, None]  # [B, S, M]
            keep = valid.reshape(B, S * M) & (area_out > 0)
            keep &= area_out >= self.min_visibility * expected.reshape(B, S * M)
        else:
            x0, y0, x1, y1 = boxes.unbind(-1)
            cx = torch.stack([x0, x1, x0, x1], -1)  # [B, S, M, 4 corners]
            cy = torch.stack([y0, y0, y1, y1], -1)
            a = tot_lin[:, :, None]  # [B, S, 1, 2, 2]
            bx = a[..., 0, 0, None] * cx + a[..., 0, 1, None] * cy + tot_t[:, :, None, 0, None]
            by = a[..., 1, 0, None] * cx + a[..., 1, 1, None] * cy + tot_t[:, :, None, 1, None]
            hull = torch.stack([bx.amin(-1), by.amin(-1), bx.amax(-1), by.amax(-1)], -1)  # [B, S, M, 4]
            clipped = torch.stack([hull[..., 0].clamp(0, w), hull[..., 1].clamp(0, h), hull[..., 2].clamp(0, w),
                                   hull[..., 3].clamp(0, h)], -1)  # fmt: skip
            area_hull = (hull[..., 2] - hull[..., 0]) * (hull[..., 3] - hull[..., 1])
            area_clip = (clipped[..., 2] - clipped[..., 0]).clamp(min=0) * (clipped[..., 3] - clipped[..., 1]).clamp(
                min=0
            )
            new_boxes = clipped.reshape(B, S * M, 4)
            keep = valid.reshape(B, S * M) & (area_clip > 0).reshape(B, S * M)
            keep &= (area_clip >= self.min_visibility * area_hull).reshape(B, S * M)
        wh = new_boxes[..., 2:] - new_boxes[..., :2]
        keep &= (wh >= self.min_size).all(-1)
        result["boxes"] = torch.where(keep[..., None], new_boxes, 0.0)
        result["valid"] = keep
        for field_name in ("labels", *BOX_FIELDS[1:]):
            if field_name in padded:
                v = padded[field_name].to(dev)[part].reshape(B, S * M)
                result[field_name] = torch.where(keep, v, torch.zeros_like(v))
        if "instance_map" in padded:
            key = slot * M + wid  # output slot + 1 where wid > 0
            kept = torch.cat([keep.new_zeros(B, 1), keep], 1)  # [B, 1 + S*M]: column 0 = background
            alive = torch.gather(kept, 1, torch.where(wid > 0, key, 0).view(B, -1)).view(B, h, w)
            result["instance_map"] = torch.where(alive, key, 0).to(torch.int32)
        return out, result

    # ------------------------------------------------------------------------------------------- list interface
    def forward(
        self,
        images: Tensor | Sequence[Tensor],
        targets: Sequence[dict[str, Any]] | dict[str, Tensor],
        *,
        generator: torch.Generator | None = None,
        params: AugParams | None = None,
        output: str | None = None,
    ) -> tuple[Tensor, list[dict[str, Any]] | dict[str, Tensor]]:
        """Augment a batch; ``targets`` as a list of dicts or a padded dict.

        ``output``: ``"list"`` or ``"padded"`` targets out (default: the form of ``targets``). ``params`` replays
        given parameters instead of drawing them from ``generator``.
        """
        if output not in (None, "list", "padded"):
            raise ValueError(f"output must be 'list' or 'padded', got {output!r}")
        src_hw = None
        if isinstance(images, Tensor):
            if images.dim() != 4 or images.shape[1] != 3:
                raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
            batch = images
        else:
            batch, src_hw = _pad_images(list(images), self.fill)
        B, _, H, W = batch.shape
        dev = batch.device
        as_list = not isinstance(targets, dict)
        if as_list:
            if len(targets) != B:
                raise ValueError(f"got {B} images but {len(targets)} targets")
            with_masks = B > 0 and all("masks" in t for t in targets)
            padded = pad_targets(targets, device=dev)
            if with_masks:
                padded["instance_map"] = instance_map(
                    [{"masks": _pad_masks(t["masks"].to(dev), H, W)} for t in targets], size=(H, W)
                )
        else:
            padded = dict(targets)
        if params is None:
            params = self.sample_params(B, device=dev, generator=generator)
        out, result = self.apply(batch, padded, params, src_hw=src_hw)
        if (output or ("list" if as_list else "padded")) == "padded":
            return out, result
        if not as_list:  # padded in, list out: no other per-image entries to carry over
            targets = [{} for _ in range(B)]
        return out, _unpad(result, targets)
