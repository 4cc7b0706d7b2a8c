"""The splatted start distances of `splat.StartSplat` through the compiled libraries
(csrc/kernels/scene_splat.cuh): on the CPU one call that loops over the surface cells and
fills every pixel's start; on the GPU one launch, a thread per cell taking each block's
minimum with an atomic, then the blocks expanded to pixels as the torch splat does.

The torch splat stays the reference (tests hold both builds to it) and what runs where no
library builds. On the GPU it was some forty launches and four host syncs a frame (a
nonzero, two any(), a sum); this is one launch and one sync (the straddle flag)."""

from __future__ import annotations

import ctypes

import torch

from .camera import Camera
from .native import Floats3, Floats9
from .splat import BLOCK, EDGE_SLACK_PX, StartSplat

_P = ctypes.c_void_p


class SplatParams(ctypes.Structure):
    """scene_splat.cuh SplatParams, field for field (the libraries check the size)."""
    _fields_ = [("centres", _P), ("faces", _P), ("k", ctypes.c_int64),
                ("half", ctypes.c_float), ("edge", ctypes.c_float), ("radius", ctypes.c_float),
                ("radius2", ctypes.c_float), ("plane", ctypes.c_float),
                ("tan_x", ctypes.c_float), ("tan_y", ctypes.c_float), ("x_lo", ctypes.c_float),
                ("x_hi", ctypes.c_float), ("y_lo", ctypes.c_float), ("y_hi", ctypes.c_float),
                ("eye", Floats3), ("rot", Floats9), ("focal", ctypes.c_float),
                ("width", ctypes.c_int32), ("height", ctypes.c_int32), ("block", ctypes.c_int32),
                ("blocks", _P), ("start", _P)]


def _bind(lib: ctypes.CDLL, gpu: bool) -> bool:
    """Declares the library's splat call; False for a library without it."""
    call = "scene_splat_blocks" if gpu else "scene_splat_starts"
    if not (hasattr(lib, call) and hasattr(lib, "scene_splat_params_size")):
        return False
    if lib.scene_splat_params_size() != ctypes.sizeof(SplatParams):
        raise RuntimeError("the scene frame library's SplatParams disagrees with native_splat.py")
    fn = getattr(lib, call)
    fn.restype = ctypes.c_int
    fn.argtypes = [_P, _P, _P, ctypes.c_int] if gpu else [_P]
    return True


class NativeSplat:
    """A StartSplat's surface cells for the compiled splat on their device; `starts` is
    `StartSplat.starts`."""

    def __init__(self, lib: ctypes.CDLL, splat: StartSplat):
        self.lib, self.splat = lib, splat
        self.device = splat.centres.device
        self.centres = splat.centres.float().contiguous()
        self.faces = splat.faces.to(torch.uint8).contiguous()
        s = SplatParams()
        s.centres, s.faces, s.k = self.centres.data_ptr(), self.faces.data_ptr(), self.centres.shape[1]
        r = splat.radius
        s.half, s.edge, s.radius, s.radius2, s.plane = splat.half, splat.half * (1 - 1e-4), r, r * r, r * 1.01
        s.block = BLOCK
        self._params = s

    def starts(self, cam: Camera) -> torch.Tensor | None:
        """What `StartSplat.starts` gives for cam (None: the eye sits in an occupied cell
        or a surface cell the view could reach straddles the camera's plane)."""
        if self.splat.eye_in_solid(cam):
            return None
        w, h, f = cam.width, cam.height, cam.focal
        s = SplatParams.from_buffer_copy(self._params)
        s.eye, s.rot = Floats3(*map(float, cam.c2w[:3, 3])), Floats9(*map(float, cam.c2w[:3, :3].reshape(-1)))
        s.focal, s.width, s.height = f, w, h
        s.tan_x, s.tan_y = w / 2 / f, h / 2 / f
        # the pixel-centre offsets as the torch splat adds them (doubles, then float32)
        s.x_lo, s.y_lo = w / 2 - (0.5 + EDGE_SLACK_PX), h / 2 - (0.5 + EDGE_SLACK_PX)
        s.x_hi, s.y_hi = w / 2 - 0.5 + EDGE_SLACK_PX, h / 2 - 0.5 + EDGE_SLACK_PX
        wb, hb = -(-w // BLOCK), -(-h // BLOCK)
        if self.device.type != "cuda":
            blocks, start = torch.empty(wb * hb), torch.empty(w * h)
            s.blocks, s.start = blocks.data_ptr(), start.data_ptr()
            return None if self.lib.scene_splat_starts(ctypes.byref(s)) else start
        dev = self.device
        blocks = torch.full((hb * wb,), float("inf"), device=dev)
        straddles = torch.zeros(1, dtype=torch.int32, device=dev)
        s.blocks, s.start = blocks.data_ptr(), None
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        code = self.lib.scene_splat_blocks(ctypes.byref(s), straddles.data_ptr(),
                                           torch.cuda.current_stream(dev).cuda_stream, index)
        if code:
            raise RuntimeError(f"scene splat kernel: {self.lib.scene_frame_error(code).decode()}")
        if bool(straddles):  # the frame's one sync before its rays are cast
            return None
        full = blocks.view(hb, 1, wb, 1).expand(hb, BLOCK, wb, BLOCK).reshape(hb * BLOCK, wb * BLOCK)
        return full[:h, :w].reshape(-1)


def native_splat(lib: ctypes.CDLL | None, splat: StartSplat) -> NativeSplat | None:
    """The compiled splat for `splat`'s device, or None (no library, or one without it)."""
    if lib is None or not _bind(lib, splat.centres.device.type == "cuda"):
        return None
    return NativeSplat(lib, splat)
