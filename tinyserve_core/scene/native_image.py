"""The whole CPU bake frame in one compiled call (csrc/scene_cpu.cpp): the splatted start
distances of `splat.StartSplat`, then `adaptive`'s refinement (even pixels cast, the rest
interpolated where their cast neighbours agree, else cast) over the per-ray loop of
`native_frames`. Around the loop the torch versions of those two steps were a third of a
frame on one thread (splat ~8 ms, agreement / upsampling / gathers ~7 ms of ~49 ms at
256 px); in the loop's library they are a fraction of a millisecond each.

The torch splat and `adaptive.render_pixels` stay the reference (the tests hold these to
them) and what the GPU runs: the GPU casts every pixel and splats with torch."""

from __future__ import annotations

import ctypes

import torch

from . import adaptive
from .camera import Camera
from .frames import FIRST_WINDOW, PREVIEW_EPS, WINDOW
from .native import Floats3, Floats9
from .native_frames import NativeFrames
from .splat import BLOCK, EDGE_SLACK_PX, StartSplat

_P = ctypes.c_void_p


class AdaptiveParams(ctypes.Structure):
    """scene_cpu.cpp AdaptiveParams, field for field (the library checks the size)."""
    _fields_ = [("max_acc", ctypes.c_float), ("max_depth", ctypes.c_float), ("max_rgb", ctypes.c_float),
                ("min_side", ctypes.c_int32), ("levels", ctypes.c_int32), ("colour_edges", ctypes.c_int32)]


class SplatParams(ctypes.Structure):
    """scene_cpu.cpp SplatParams, field for field."""
    _fields_ = [("centres", _P), ("faces", _P), ("k", ctypes.c_int64),
                ("half", ctypes.c_float), ("edge", ctypes.c_float), ("radius", ctypes.c_float),
                ("radius2", ctypes.c_float), ("plane", ctypes.c_float),
                ("tan_x", ctypes.c_float), ("tan_y", ctypes.c_float), ("x_lo", ctypes.c_float),
                ("x_hi", ctypes.c_float), ("y_lo", ctypes.c_float), ("y_hi", ctypes.c_float),
                ("eye", Floats3), ("rot", Floats9), ("focal", ctypes.c_float),
                ("width", ctypes.c_int32), ("height", ctypes.c_int32), ("block", ctypes.c_int32),
                ("blocks", _P), ("start", _P)]


def _bind(lib: ctypes.CDLL) -> bool:
    """Declares the CPU library's frame calls; False for a library without them (the GPU
    build) or whose structs disagree with these mirrors."""
    if not all(hasattr(lib, n) for n in ("scene_frame_adaptive", "scene_splat_starts", "scene_adaptive_params_size",
                                         "scene_splat_params_size")):
        return False
    if (lib.scene_adaptive_params_size() != ctypes.sizeof(AdaptiveParams)
            or lib.scene_splat_params_size() != ctypes.sizeof(SplatParams)):
        raise RuntimeError("the scene frame library's AdaptiveParams / SplatParams disagree with native_image.py")
    lib.scene_frame_adaptive.restype = ctypes.c_int64
    lib.scene_frame_adaptive.argtypes = [_P, _P]
    lib.scene_splat_starts.restype = ctypes.c_int
    lib.scene_splat_starts.argtypes = [_P]
    return True


class NativeImage:
    """The compiled splat and adaptive frame of a bake on the CPU."""

    def __init__(self, frames: NativeFrames, splat: StartSplat):
        if frames.device.type != "cpu":
            raise ValueError("the one-call frame is the CPU's (the GPU casts every pixel)")
        self.frames, self.splat, self.lib = frames, splat, frames.lib
        self.centres = splat.centres.float().contiguous()
        self.faces = splat.faces.to(torch.uint8).contiguous()
        s = SplatParams()
        s.centres, s.faces, s.k = self.centres.data_ptr(), self.faces.data_ptr(), self.centres.shape[1]
        r = splat.radius
        s.half, s.edge, s.radius, s.radius2, s.plane = splat.half, splat.half * (1 - 1e-4), r, r * r, r * 1.01
        s.block = BLOCK
        self._splat = s

    def starts(self, cam: Camera) -> torch.Tensor | None:
        """What `StartSplat.starts` gives for cam (None: the eye sits in an occupied cell
        or a surface cell the view could reach straddles the camera's plane)."""
        if self.splat.eye_in_solid(cam):
            return None
        w, h, f = cam.width, cam.height, cam.focal
        s = SplatParams.from_buffer_copy(self._splat)
        s.eye, s.rot = Floats3(*map(float, cam.c2w[:3, 3])), Floats9(*map(float, cam.c2w[:3, :3].reshape(-1)))
        s.focal, s.width, s.height = f, w, h
        s.tan_x, s.tan_y = w / 2 / f, h / 2 / f
        # the pixel-centre offsets as the torch splat adds them (doubles, then float32)
        s.x_lo, s.y_lo = w / 2 - (0.5 + EDGE_SLACK_PX), h / 2 - (0.5 + EDGE_SLACK_PX)
        s.x_hi, s.y_hi = w / 2 - 0.5 + EDGE_SLACK_PX, h / 2 - 0.5 + EDGE_SLACK_PX
        blocks = torch.empty(-(-w // BLOCK) * -(-h // BLOCK))
        start = torch.empty(w * h)
        s.blocks, s.start = blocks.data_ptr(), start.data_ptr()
        return None if self.lib.scene_splat_starts(ctypes.byref(s)) else start

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
    a library without the call)."""
    if frames is None or frames.device.type != "cpu" or not _bind(frames.lib):
        return None
    return NativeImage(frames, splat)
