"""The bake frame through the compiled per-ray loop (csrc/kernels/scene_frame.cuh): the
tables of `frames.CellTable` and `interactive.EmptySpace` as the loop reads them, and one
call per cast of rays on the CPU (a loop over the rays on this thread) or the GPU (one
thread per ray, on torch's current stream).

The torch frame (`frames.render_cells`) is the reference: the same sample positions,
density activation, weights, preview colour rule and peak-sample classes, without its
many whole-array operations per window (a third of a CPU frame was their dispatch)."""

from __future__ import annotations

import ctypes

import torch

from . import native
from .native import Floats3, Floats9, Ints3, FrameParams
from .camera import Camera
from .frames import FIRST_WINDOW, PREVIEW_EPS, WINDOW, CellTable
from .interactive import EmptySpace

# Windows and tracing go on until a ray is opaque or leaves the grid (the torch frame's
# long last window stands for the same): 64 rounds of 8 voxels pass any grid the scenes
# use; the bound only keeps a degenerate ray from looping for ever.
MAX_ROUNDS = 64
MAX_TRACE = 16  # sphere-tracing steps between windows, as the torch frame
T_STOP = 0.02  # early ray termination: the torch frame's transmittance threshold
# light left below which a window ends early: what it would still sample changes no pixel
# by more than this (the torch frame samples whole windows)
T_NEGLIGIBLE = 1e-4

class NativeFrames:
    """A bake's tables for the compiled loop, on the bake's device."""

    def __init__(self, table: CellTable, space: EmptySpace, lib: ctypes.CDLL):
        self.lib, self.device = lib, table.density.device
        # a ray reads one cell's 8 corners at a time: rows [K + 1, 8], where the torch
        # frame's long vectorised loops wanted planes [8, K + 1]
        self.density = table.density.t().contiguous()
        self.colour = table.colour.contiguous()
        self.row = table.row.contiguous()
        self.class_corners = table.class_corners.contiguous()
        self.class_ids = table.class_ids.to(torch.int32).contiguous()
        self.trace_skip = space.trace_skip.contiguous()
        self.num_classes, self.voxel = table.num_classes, table.voxel
        p = FrameParams()
        p.lo, p.hi, p.voxel = Floats3(*table.lo), Floats3(*table.hi), table.voxel
        p.cells = Ints3(*space.shape)
        p.padded = Ints3(*(n + 2 for n in space.shape))
        p.air, p.classes, p.kept_classes = self.density.shape[0] - 1, table.num_classes, self.class_ids.shape[1]
        p.max_rounds, p.max_trace, p.t_stop, p.t_negligible = MAX_ROUNDS, MAX_TRACE, T_STOP, T_NEGLIGIBLE
        for name in ("row", "density", "colour", "class_corners", "class_ids", "trace_skip"):
            setattr(p, name, getattr(self, name).data_ptr())
        self._params = p

    def render(self, cam: Camera, start: torch.Tensor, pixels: torch.Tensor | None, step: float, background,
               first_window: float = FIRST_WINDOW, window: float = WINDOW,
               app_eps: float = PREVIEW_EPS) -> dict[str, torch.Tensor]:
        """rgb [N,3], depth [N], probs [N,C], acc [N] of the pixels (flat, row-major; None:
        every pixel of cam) whose rays start at `start` [H*W] (the splat's): what
        `frames.render_cells` gives for them."""
        out, p = self.prepare(cam, start, pixels, step, background, first_window, window, app_eps)
        if p.n == 0:
            return out
        if self.device.type == "cuda":
            dev = self.device
            index = dev.index if dev.index is not None else torch.cuda.current_device()
            code = self.lib.scene_frame_render(ctypes.byref(p), torch.cuda.current_stream(dev).cuda_stream, index)
            if code:
                raise RuntimeError(f"scene frame kernel: {self.lib.scene_frame_error(code).decode()}")
        else:
            self.lib.scene_frame_render(ctypes.byref(p))
        return out

    def prepare(self, cam: Camera, start: torch.Tensor, pixels: torch.Tensor | None, step: float, background,
                first_window: float = FIRST_WINDOW, window: float = WINDOW,
                app_eps: float = PREVIEW_EPS) -> tuple[dict[str, torch.Tensor], FrameParams]:
        """The outputs (uninitialised) and the FrameParams of a cast as `render` describes
        it; the params point into the outputs and into `start` and `pixels` as converted
        here, which the params keep alive."""
        dev = self.device
        start = start.to(device=dev, dtype=torch.float32).contiguous()
        if start.numel() != cam.width * cam.height:
            raise ValueError(f"start has {start.numel()} values for a {cam.width}x{cam.height} frame")
        if pixels is not None:
            pixels = pixels.to(device=dev, dtype=torch.int64).contiguous()
        n = cam.width * cam.height if pixels is None else pixels.numel()
        out = {"rgb": torch.empty(n, 3, device=dev), "depth": torch.empty(n, device=dev),
               "probs": torch.empty(n, self.num_classes, device=dev), "acc": torch.empty(n, device=dev)}
        p = FrameParams.from_buffer_copy(self._params)  # the tables' part, then this frame's
        p.eye, p.rot = Floats3(*map(float, cam.c2w[:3, 3])), Floats9(*map(float, cam.c2w[:3, :3].reshape(-1)))
        p.focal, p.width, p.height = cam.focal, cam.width, cam.height
        p.step, p.app_eps, p.background = step, app_eps, Floats3(*background)
        # samples per window as the torch frame rounds them
        p.first_window = max(1, round(first_window * self.voxel / step))
        p.window = max(1, round(window * self.voxel / step))
        p.start, p.pixels, p.n = start.data_ptr(), (pixels.data_ptr() if pixels is not None else None), n
        p.rgb, p.depth, p.acc, p.probs = (out[k].data_ptr() for k in ("rgb", "depth", "acc", "probs"))
        p._keep = (start, pixels)  # the tensors p points into live as long as p
        return out, p


def native_frames(table: CellTable, space: EmptySpace) -> NativeFrames | None:
    """The compiled frames for tables on their device, or None where the library is not
    to be had (no compiler, a failed build, TINYSERVE_SCENE_FRAMES=torch)."""
    lib = native.library(table.density.device)
    return NativeFrames(table, space, lib) if lib is not None else None
