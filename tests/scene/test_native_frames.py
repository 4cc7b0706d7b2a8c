"""The compiled frame loop (csrc/kernels/scene_frame.cuh through scene/native.py) on the
CPU: it renders what the torch frame (`frames.render_cells`) renders, at any pose, size
and subset of pixels, and without a compiler or with a broken build the torch frames run
and say so once.

Tolerances, measured on the shipped room: against the torch frame with its long last
window turned off (windows and tracing to the end, as the compiled loop does) 94-98 dB
PSNR, opacity within 1e-4 (the light left when a compiled window stops early); against
the torch frame as it is, 49-59 dB at these small sizes, where its last window starts
right after the first (64-78 dB at 256 px), labels >= 99.96% equal.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest
import torch

from tinyserve_core.errors import ConfigError
from tinyserve_core.scene import native, native_frames
from tinyserve_core.scene.bake import as_result
from tinyserve_core.scene.camera import Camera, look_at, orbit_camera
from tinyserve_core.scene.frames import eye_box_bounds, frame_rays, render_cells, render_frame

MIN_PSNR_DB = 45.0  # compiled vs torch frame, every pixel cast
EXACT_PSNR_DB = 85.0  # the same, the torch frame without its long last window
MIN_LABELS = 0.999


@pytest.fixture(scope="module")
def compiled(lab):
    frames = lab.bake.compiled()
    if frames is None:
        pytest.skip("no C++ compiler here: the torch frames run (tested below)")
    return frames


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(max(float(((a - b) ** 2).mean()), 1e-12))


def _torch_frame(bake, cam, start, step, **march):
    o, d = frame_rays(cam, bake.device)
    near, far = eye_box_bounds(o[0], d.t().contiguous(), bake.cells.lo, bake.cells.hi)
    return render_cells(bake.cells, bake.space, o, d, start, near, far, step, bake.background, **march)


@pytest.mark.parametrize("az,elev,dist,w,h,coarse", [(20.0, 40.0, None, 96, 96, False), (200.0, 65.0, 2.2, 80, 56, False),
                                                     (305.0, 25.0, 2.6, 64, 72, True), (120.0, 20.0, 1.0, 72, 72, False),
                                                     (10.0, 5.0, 1.3, 48, 80, True)])
def test_compiled_frame_matches_the_torch_frame(lab, compiled, az, elev, dist, w, h, coarse):
    """Every pixel, from orbit poses and eyes inside the room, half- and whole-voxel steps."""
    bake = lab.bake
    cam = orbit_camera(lab.spec.camera_target, az, elev, dist or lab.spec.camera_distance, w, h)
    start = bake.splat.starts(cam)
    step = bake.grid.voxel if coarse else bake.grid.voxel / 2
    out = compiled.render(cam, start, None, step, bake.background)
    ref = _torch_frame(bake, cam, start, step)
    assert _psnr(out["rgb"], ref["rgb"]) >= MIN_PSNR_DB
    assert float((out["probs"].argmax(1) == ref["probs"].argmax(1)).float().mean()) >= MIN_LABELS
    hit = ref["acc"] > 0.5
    assert float((out["depth"] - ref["depth"])[hit].abs().median()) < 1e-4
    # the same semantics exactly: windows and tracing on to the end in both
    exact = _torch_frame(bake, cam, start, step, rounds=native_frames.MAX_ROUNDS, tail_samples=0)
    assert _psnr(out["rgb"], exact["rgb"]) >= EXACT_PSNR_DB
    assert float((out["acc"] - exact["acc"]).abs().max()) <= 2 * native_frames.T_NEGLIGIBLE
    assert float((out["depth"] - exact["depth"]).abs().max()) < 1e-3
    assert torch.equal(out["probs"].argmax(1), exact["probs"].argmax(1))
    assert torch.allclose(out["probs"].sum(1), torch.ones(w * h), atol=1e-4)  # a distribution per pixel
    assert (out["probs"] >= 0).all()


def test_a_subset_of_pixels_renders_those_pixels(lab, compiled):
    bake = lab.bake
    cam = lab.camera(azimuth=75, size=64)
    start = bake.splat.starts(cam)
    step = bake.grid.voxel / 2
    every = compiled.render(cam, start, None, step, bake.background)
    idx = torch.randperm(64 * 64, generator=torch.Generator().manual_seed(3))[:500]
    some = compiled.render(cam, start, idx, step, bake.background)
    for k in every:
        assert torch.equal(some[k], every[k].index_select(0, idx)), k
    empty = compiled.render(cam, start, idx[:0], step, bake.background)
    assert all(v.shape[0] == 0 for v in empty.values())


def test_the_adaptive_frame_with_compiled_rays_matches_the_torch_one(lab, compiled):
    """The bake frame as the lab draws it (adaptive refinement over compiled casts) against
    the same frame cast by torch: the refinement makes the same choices."""
    bake = lab.bake
    cam = lab.camera(azimuth=140, size=128)
    step = bake.grid.voxel / 2
    args = (bake.cells, bake.splat, bake.space, cam, step, bake.background, bake.device)
    fast = as_result(render_frame(*args, native=compiled), cam)
    ref = as_result(render_frame(*args), cam)
    assert -10 * math.log10(max(float(np.mean((fast.rgb - ref.rgb) ** 2)), 1e-12)) >= 50.0
    assert float((fast.label == ref.label).mean()) >= MIN_LABELS
    every = as_result(render_frame(*args, levels=0, native=compiled), cam)
    assert float((every.label == ref.label).mean()) >= 0.99  # every pixel vs interpolated


def test_the_lab_renders_with_the_compiled_frames(lab, compiled, monkeypatch):
    """Without the one-call CPU frame (scene/native_image.py; a library without it) the
    torch refinement casts through the compiled loop."""
    monkeypatch.setattr(lab.bake, "_image", None)
    cast = []
    render = compiled.render
    monkeypatch.setattr(compiled, "render", lambda *a, **k: cast.append(a[2]) or render(*a, **k))
    cam = Camera(look_at(np.array([1.2, -1.0, 0.9]), np.array(lab.spec.camera_target)), 48, 40)
    frame = lab.render(cam, "bake")
    # adaptive on the CPU: the even pixels, then the edges between them
    assert len(cast) == 2 and cast[0].numel() == 24 * 20
    assert frame.rgb.shape == (40, 48, 3) and frame.probs.shape == (40, 48, lab.bake.num_classes)
    assert set(np.unique(frame.label)) - {0}  # some object is seen


def test_torch_is_forced_by_the_environment(lab, monkeypatch):
    monkeypatch.setenv(native.ENV, "torch")
    assert native.library(torch.device("cpu")) is None
    monkeypatch.setenv(native.ENV, "quick")
    with pytest.raises(ConfigError, match=native.ENV):
        native.library(torch.device("cpu"))


def test_without_a_compiler_the_torch_frames_run_and_say_so_once(lab, monkeypatch, capsys):
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setattr(native, "_said", set())
    monkeypatch.setattr(native, "_cpu_command", lambda: None)
    assert native.library(torch.device("cpu")) is None
    assert native.library(torch.device("cpu")) is None
    err = capsys.readouterr().err
    assert err.count("compiled scene frames for cpu not available (no C++ compiler") == 1
    # a bake built now takes the torch frames, and renders
    from tinyserve_core.scene.bake import Bake

    bake = Bake(lab.bake.grid, lab.bake.labels, lab.bake.density, lab.bake.app, lab.bake.occ, lab.bake.background)
    assert bake.compiled() is None
    assert bake.render(lab.camera(size=32)).rgb.shape == (32, 32, 3)
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv(native.ENV, "compiled")
    with pytest.raises(ConfigError, match="not available"):   # a person's error: one line in the CLI
        native.library(torch.device("cpu"))


def test_cxx_may_carry_words_of_its_own(monkeypatch):
    """$CXX as make reads it ("ccache g++", "g++ -m64"): split into the command's words,
    not run as one file name (which fails and falls back to the torch frames)."""
    monkeypatch.setenv("CXX", "ccache  g++ -m64")
    assert native._cpu_command()[:3] == ["ccache", "g++", "-m64"]
    monkeypatch.setenv("CXX", "")
    command = native._cpu_command()
    assert command is None or (command[0] and command[1:] == list(native.CPU_FLAGS))


def test_an_unwritable_cache_says_how_to_move_it(monkeypatch, tmp_path, capsys):
    """A cache that cannot be created (a read-only home; here a file in the way, as this
    runs as root) falls back to the torch frames, naming TINYSERVE_CACHE."""
    if native._cpu_command() is None:
        pytest.skip("no C++ compiler")
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("TINYSERVE_CACHE", str(tmp_path / "file" / "cache"))
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setattr(native, "_said", set())
    assert native.library(torch.device("cpu")) is None
    err = capsys.readouterr().err
    assert "set TINYSERVE_CACHE to a writable folder" in err and "using the torch frames" in err


def test_a_failed_build_falls_back(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TINYSERVE_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setattr(native, "_said", set())
    command = native._cpu_command()
    if command is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setattr(native, "_cpu_command", lambda: [*command, "-DSCENE_FRAME_BROKEN", "-include", "/nonexistent.h"])
    assert native.library(torch.device("cpu")) is None
    assert "build failed" in capsys.readouterr().err
    assert not list((tmp_path / "scene_frames").glob("*.so"))  # no half-built library left


def test_the_cache_key_follows_sources_command_and_machine(tmp_path):
    a, b = tmp_path / "a.cpp", tmp_path / "b.cuh"
    a.write_text("int x;\n")
    b.write_text("// header\n")
    key = native.build_key([a, b], ["c++", "-O3"], "x86_64 avx2")
    assert key == native.build_key([a, b], ["c++", "-O3"], "x86_64 avx2")
    assert key != native.build_key([a, b], ["c++", "-O2"], "x86_64 avx2")
    assert key != native.build_key([a, b], ["c++", "-O3"], "x86_64 avx512f")
    b.write_text("// header, changed\n")
    assert key != native.build_key([a, b], ["c++", "-O3"], "x86_64 avx2")


def test_a_cached_library_is_loaded_not_rebuilt(monkeypatch, tmp_path):
    command = native._cpu_command()
    if command is None:
        pytest.skip("no C++ compiler")
    first = native.build("cpu", command, native.CPU_SOURCE, "m", tmp_path)
    assert first.exists() and first.parent == tmp_path
    assert (first.parent / first.name.replace(".so", ".lock")).exists()

    def no_compiler(*a, **k):
        raise AssertionError("rebuilt a cached library")

    monkeypatch.setattr(native.subprocess, "run", no_compiler)
    assert native.build("cpu", command, native.CPU_SOURCE, "m", tmp_path) == first
    # another machine's flags are another library
    with pytest.raises(AssertionError, match="rebuilt"):
        native.build("cpu", command, native.CPU_SOURCE, "other machine", tmp_path)


def test_the_cache_lives_outside_the_package(monkeypatch, tmp_path):
    from tinyserve_core.resources import package_dir

    monkeypatch.delenv("TINYSERVE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert native.cache_dir() == tmp_path / "tinyserve" / "scene_frames"
    assert package_dir() not in native.cache_dir().parents


def test_the_apartment_too():
    """The second scene (more classes than a cell keeps, two rooms): its own tables, the
    same agreement, from two orbit poses."""
    from tinyserve_core.scene.lab import SceneLab

    lab = SceneLab("apartment")
    bake = lab.bake
    compiled = bake.compiled()
    if compiled is None:
        pytest.skip("no C++ compiler here")
    for cam in (lab.camera(azimuth=50, size=64), lab.camera(azimuth=230, elevation=25, size=72)):
        start = bake.splat.starts(cam)
        step = bake.grid.voxel / 2
        out = compiled.render(cam, start, None, step, bake.background)
        exact = _torch_frame(bake, cam, start, step, rounds=native_frames.MAX_ROUNDS, tail_samples=0)
        assert _psnr(out["rgb"], exact["rgb"]) >= EXACT_PSNR_DB
        assert torch.equal(out["probs"].argmax(1), exact["probs"].argmax(1))
        assert out["probs"].shape[1] == bake.num_classes > 14


def test_a_build_waits_for_another_builder_and_takes_its_library(monkeypatch, tmp_path):
    """Two processes (here: two threads with their own lock handles) building the same
    library: the second waits on the file lock and then loads what the first wrote."""
    import fcntl
    import threading

    command = ["c++", "-O3"]
    key = native.build_key(native.build_sources(native.CPU_SOURCE), command, "m")
    lib = tmp_path / f"scene_frame_cpu-{key}.so"
    ran = []
    monkeypatch.setattr(native.subprocess, "run", lambda *a, **k: ran.append(a) or pytest.fail("built twice"))
    with open(tmp_path / f"scene_frame_cpu-{key}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the first builder, mid-build
        got = []
        waiter = threading.Thread(target=lambda: got.append(native.build("cpu", command, native.CPU_SOURCE, "m",
                                                                          tmp_path)))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and not got  # waiting on the lock, not compiling
        lib.write_bytes(b"built by the first")
    waiter.join(5)
    assert got == [lib] and not ran


def test_a_cached_library_that_does_not_load_is_built_again(monkeypatch, tmp_path, capsys):
    """A cached file cut short (a crash between the compile and the disk) is not a reason
    to run the torch frames for good: it is built once more and loaded."""
    command = native._cpu_command()
    if command is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("TINYSERVE_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setattr(native, "_said", set())
    key = native.build_key(native.build_sources(native.CPU_SOURCE), command, native._machine())
    broken = native.cache_dir() / f"scene_frame_cpu-{key}.so"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x7fELF cut short")
    lib = native.library(torch.device("cpu"))
    assert lib is not None and lib.scene_frame_params_size() == ctypes.sizeof(native.FrameParams)
    assert broken.read_bytes()[:4] == b"\x7fELF" and broken.stat().st_size > 1000
    assert "not available" not in capsys.readouterr().err
