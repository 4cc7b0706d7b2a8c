"""The 3D view draws thinner clouds on a software OpenGL renderer, whose paints run on the
CPU in the GUI thread (Mesa's llvmpipe: 60-85 ms a paint at the full caps, 20-30 ms at the
smaller ones)."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from app.scene.view3d import (MAX_BLOCKED, MAX_POINTS, SOFTWARE_MAX_BLOCKED,  # noqa: E402
                              SOFTWARE_MAX_POINTS, point_caps)


@pytest.mark.parametrize("renderer", ["llvmpipe (LLVM 15.0.6, 256 bits)", "softpipe", "Software Rasterizer",
                                      "Mesa X11 swrast"])
def test_software_renderers_get_the_smaller_caps(renderer):
    assert point_caps(renderer) == (SOFTWARE_MAX_POINTS, SOFTWARE_MAX_BLOCKED)


@pytest.mark.parametrize("renderer", ["NVIDIA GeForce RTX 4090/PCIe/SSE2", "AMD Radeon Pro", "Apple M2", ""])
def test_hardware_renderers_get_the_full_caps(renderer):
    assert point_caps(renderer) == (MAX_POINTS, MAX_BLOCKED)
    assert SOFTWARE_MAX_POINTS < MAX_POINTS and SOFTWARE_MAX_BLOCKED < MAX_BLOCKED
