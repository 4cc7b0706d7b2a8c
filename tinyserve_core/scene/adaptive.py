"""Adaptive image-space sampling for interactive frames: rays are cast through every
other pixel of every other row first, and a remaining pixel is cast only where the
(up to four) cast pixels around it disagree (label, opacity, depth or colour: an edge);
elsewhere it is interpolated bilinearly from them. Inside a surface the bake's colour
changes over voxels, about two pixels at 256 px, so interpolation there is close to the
cast value while edges keep every ray. About a third of a frame's rays are cast.
"""

from __future__ import annotations

from typing import Callable

import torch

from .camera import Camera

# Neighbours agree when they share a label and their opacity, depth and colour differ by
# less than these (depth in voxels: a floor seen at a grazing angle changes by a few
# voxels over two pixels, which interpolation follows, while an object edge jumps further)
MAX_ACC_RANGE = 0.02
MAX_DEPTH_RANGE_VOXELS = 3.0
MAX_RGB_RANGE = 0.06
MIN_SIDE = 8  # below this every pixel is cast
LEVELS = 1  # refinement levels: 1 casts the even pixels first, 2 every fourth, ...


def render_image(render_rays: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]], cam: Camera,
                 device: torch.device, voxel: float, levels: int = LEVELS) -> dict[str, torch.Tensor]:
    """Outputs of render_rays ([H*W, ...], row-major) for every pixel of cam."""
    o, d = (x.to(device) for x in cam.rays())
    pix = torch.arange(cam.height * cam.width, device=device).view(cam.height, cam.width)
    return _refine(lambda idx: render_rays(o.index_select(0, idx), d.index_select(0, idx)), pix, levels,
                   MAX_DEPTH_RANGE_VOXELS * voxel)


def _refine(cast: Callable[[torch.Tensor], dict[str, torch.Tensor]], pix: torch.Tensor, levels: int,
            max_depth: float) -> dict[str, torch.Tensor]:
    """Values at the pixels `pix` [h, w] (flat image indices): the even rows and columns
    first (recursively, `levels` deep), then the rest interpolated or cast."""
    h, w = pix.shape
    if levels == 0 or min(h, w) < MIN_SIDE:
        return cast(pix.reshape(-1))
    dev = pix.device
    coarse = _refine(cast, pix[0::2, 0::2], levels - 1, 2 * max_depth)
    ch, cw = (h + 1) // 2, (w + 1) // 2
    # each pixel's cast neighbours (y0, x0), (y0, x1), (y1, x0), (y1, x1) on the coarse
    # grid and its bilinear fractions; even rows and columns are their own neighbours
    y, x = torch.arange(h, device=dev), torch.arange(w, device=dev)
    y0, x0 = y // 2, x // 2
    y1, x1 = y0 + y % 2, x0 + x % 2
    edge = (y1[:, None] >= ch) | (x1[None, :] >= cw)  # last odd row or column: no neighbour below or right
    y1, x1 = y1.clamp_max(ch - 1), x1.clamp_max(cw - 1)
    corners = torch.stack([(y0[:, None] * cw + x0[None, :]), (y0[:, None] * cw + x1[None, :]),
                           (y1[:, None] * cw + x0[None, :]), (y1[:, None] * cw + x1[None, :])]).view(-1)
    fy = (y % 2).float()[:, None].expand(h, w).reshape(-1) * 0.5
    fx = (x % 2).float()[None, :].expand(h, w).reshape(-1) * 0.5
    wts = torch.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])  # [4, h*w]

    def gather(t: torch.Tensor) -> torch.Tensor:  # [4, h*w, ...]
        return t.index_select(0, corners).view(4, h * w, *t.shape[1:])

    label = gather(coarse["probs"].argmax(1))
    acc, depth, rgb = gather(coarse["acc"]), gather(coarse["depth"]), gather(coarse["rgb"])
    agree = ((label == label[0]).all(0)
             & (acc.amax(0) - acc.amin(0) < MAX_ACC_RANGE)
             & (depth.amax(0) - depth.amin(0) < max_depth)
             & ((rgb.amax(0) - rgb.amin(0)).amax(1) < MAX_RGB_RANGE)
             & ~edge.reshape(-1))
    out = {k: (gather(v).view(4, h * w, -1) * wts[..., None]).sum(0).view(h * w, *v.shape[1:])
           for k, v in coarse.items()}
    # pixels on even rows and columns hold their own cast value already
    redo = torch.nonzero(~agree & ((fy > 0) | (fx > 0))).squeeze(1)
    if redo.numel():
        fine = cast(pix.reshape(-1).index_select(0, redo))
        for k in out:
            out[k].index_copy_(0, redo, fine[k])
    return out
