"""The whole CPU bake frame in one compiled call (csrc/scene_cpu.cpp): the splatted start
distances of `splat.StartSplat`, then `adaptive`'s refinement (even pixels cast, the rest
interpolated where their cast neighbours agree, else cast) over the per-ray loop of
`native_frames`. Around the loop the torch versions of those two steps were a third of a
frame on one thread (splat ~8 ms, agreement / upsampling / gathers ~7 ms of ~49 ms at
256 px); in the loop's library they are a fraction of a millisecond each.

The torch splat and `adaptive.render_pixels` stay the reference (the tests hold these to
them). The GPU casts every pixel, after the same compiled splat (`native_splat`)."""

from __future__ import annotations

import ctypes

import torch

from . import adaptive
from .camera import Camera
from .frames import FIRST_WINDOW, PREVIEW_EPS, WINDOW
from .native_frames import NativeFrames
from .native_splat import NativeSplat, native_splat
from .splat import StartSplat

_P = ctypes.c_void_p


class AdaptiveParams(ctypes.Structure):
    """scene_cpu.cpp AdaptiveParams, field for field (the library checks the size)."""
    _fields_ = [("max_acc", ctypes.c_float), ("max_depth", ctypes.c_float), ("max_rgb", ctypes.c_float),
                ("min_side", ctypes.c_int32), ("levels", ctypes.c_int32), ("colour_edges", ctypes.c_int32)]


def _bind(lib: ctypes.CDLL) -> bool:
    """Declares the CPU library's frame call; False for a library without it (the GPU
    build) or whose struct disagrees with this mirror."""
    if not all(hasattr(lib, n) for n in ("scene_frame_adaptive", "scene_adaptive_params_size")):
        return False
    if lib.scene_adaptive_params_size() != ctypes.sizeof(AdaptiveParams):
        raise RuntimeError("the scene frame library's AdaptiveParams disagrees with native_image.py")
    lib.scene_frame_adaptive.restype = ctypes.c_int64
    lib.scene_frame_adaptive.argtypes = [_P, _P]
    return True


class NativeImage:
    """The compiled splat and adaptive frame of a bake on the CPU."""

    def __init__(self, frames: NativeFrames, splat: NativeSplat):
        if frames.device.type != "cpu":
            raise ValueError("the one-call frame is the CPU's (the GPU casts every pixel)")
        self.frames, self.splat, self.lib = frames, splat, frames.lib

    def starts(self, cam: Camera) -> torch.Tensor | None:
        """What `StartSplat.starts` gives for cam (`NativeSplat.starts`)."""
        return self.splat.starts(cam)

    def render(self, cam: Camera, step: float, background, levels: int = adaptive.LEVELS, colour_edges: bool = True,
               first_window: float = FIRST_WINDOW, window: float = WINDOW,
               app_eps: float = PREVIEW_EPS) -> dict[str, torch.Tensor] | None:
        """rgb [H*W,3], depth, probs [H*W,C], acc of every pixel of cam: what
        `frames.render_frame` gives with the compiled casts; None where the splat has no
        bounded start (the caller traces from the eye). `self.cast` is how many rays the
        last frame cast."""
        start = self.starts(cam)
        if start is None:
            return None
        out, p = self.frames.prepare(cam, start, None, step, background, first_window, window, app_eps)
        a = AdaptiveParams(adaptive.MAX_ACC_RANGE, adaptive.MAX_DEPTH_RANGE_VOXELS * self.frames.voxel,
                           adaptive.MAX_RGB_RANGE, adaptive.MIN_SIDE, levels, int(colour_edges))
        self.cast = int(self.lib.scene_frame_adaptive(ctypes.byref(p), ctypes.byref(a)))
        return out


def native_image(frames: NativeFrames | None, splat: StartSplat) -> NativeImage | None:
    """The one-call CPU frame over compiled frames, or None (no compiled frames, a GPU, or
    a library without the calls)."""
    if frames is None or frames.device.type != "cpu" or not _bind(frames.lib):
        return None
    compiled_splat = native_splat(frames.lib, splat)
    return NativeImage(frames, compiled_splat) if compiled_splat is not None else None
