"""The wheel, as a user who never sees the repository gets it: built from a copy of the
working tree (`pip wheel --no-deps`), installed with `--no-deps --no-index` into a fresh
venv that borrows this venv's packages (torch, numpy, ...) through a .pth file, and run
from a folder outside the repository. No network is used."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# Build outputs and environments at the top of the checkout never belong in a build;
# copying without them also keeps a stale build/ from leaking old files into the wheel.
TOP_LEVEL_SKIP = {".git", ".venv", "build", "dist", "out", ".carry", ".whl", ".gl",
                  ".pytest_cache", ".hypothesis"}
PROMPT = "The list"


def _skip(folder: str, names: list[str]) -> list[str]:
    top = Path(folder) == REPO
    return [n for n in names if (top and n in TOP_LEVEL_SKIP) or n == "__pycache__"
            or n.endswith((".egg-info", ".so", ".pyc"))]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"  # only the new venv and the borrowed site-packages
    return env


def _run(cmd: list, cwd: Path) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_skip)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", tmp / "dist", src], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("tinyserve-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    py = venv / "bin" / "python"
    # This venv's pip installs into the new one (which has no pip of its own).
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel],
         cwd=tmp)
    # Borrow the test venv's packages after the install, so pip saw a clean venv. A .pth
    # adds the folder to sys.path without processing the .pth files inside it, so the
    # repository's editable finder stays out; the new venv's own packages come first.
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp)
                .stdout.strip())
    paths = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_borrowed_test_venv.pth").write_text("\n".join(paths) + "\n")
    return {"wheel": wheel, "venv": venv, "py": py, "cwd": tmp, "site": site}


def test_wheel_ships_model_text_scenes_and_cuda_sources_only(wheel_venv):
    names = zipfile.ZipFile(wheel_venv["wheel"]).namelist()
    for must in ("tinyserve_core/assets/models/tinyserve-lm/model.safetensors",
                 "tinyserve_core/assets/models/tinyserve-lm/tokenizer.json",
                 "tinyserve_core/assets/scenes/room.json",
                 "tinyserve_core/assets/scenes/room.weights.safetensors",
                 "tinyserve_core/assets/text/LICENSE",
                 "tinyserve_core/assets/text/heldout/library/csv.rst.txt",
                 "tinyserve_core/csrc/bindings.cpp", "tinyserve_core/csrc/kernels/common.cuh",
                 # the scene's compiled frames build from these on first use
                 "tinyserve_core/csrc/scene_cpu.cpp", "tinyserve_core/csrc/scene_ops.cu",
                 "tinyserve_core/csrc/kernels/scene_frame.cuh",
                 "tinyserve_core/py.typed"):
        assert must in names
    assert sum(n.startswith("tinyserve_core/csrc/") and n.endswith(".cu") for n in names) >= 4
    assert sum(n.startswith("tinyserve_core/assets/text/") and n.endswith(".txt") for n in names) >= 40
    # data folders are not packages: the scripts beside the data stay in the repository
    assert not [n for n in names if n.startswith(("tinyserve_core/assets/", "tinyserve_core/csrc/"))
                and n.endswith(".py")]


def test_installed_wheel_runs_from_outside_the_repo(wheel_venv, capsys):
    venv, cwd = wheel_venv["venv"], wheel_venv["cwd"]
    found = json.loads(_run([wheel_venv["py"], "-c", (
        "import json, tinyserve_core, app\n"
        "from tinyserve_core.kernels._backend import CSRC\n"
        "from tinyserve_core.scene.spec import scene_path\n"
        "from tinyserve_core.engine.workloads.text import DEFAULT_TEXT_DIR\n"
        "from tinyserve_core.model.train.corpus import shipped_heldout_documents\n"
        "print(json.dumps({'pkg': tinyserve_core.__file__, 'app': app.__file__, "
        "'csrc': str(CSRC / 'attention_ops.cu'), 'scene': str(scene_path('room')), "
        "'text': str(DEFAULT_TEXT_DIR), 'heldout': len(shipped_heldout_documents())}))")], cwd=cwd).stdout)
    for key in ("pkg", "app", "csrc", "scene", "text"):
        assert Path(found[key]).resolve().is_relative_to(venv.resolve()), (key, found[key])
        assert Path(found[key]).exists()
    assert found["heldout"] == 21

    out = _run([venv / "bin" / "tinyserve", "generate", "--max-tokens", "4", PROMPT], cwd=cwd).stdout
    assert out.startswith(PROMPT) and len(out.rstrip("\n")) > len(PROMPT)
    # the installed copy generates what the checkout does
    from tinyserve_core.cli import main

    capsys.readouterr()
    assert main(["generate", "--max-tokens", "4", PROMPT]) == 0
    assert out == capsys.readouterr().out

    info = _run([venv / "bin" / "tinyserve", "info"], cwd=cwd).stdout
    (model_line,) = [line for line in info.splitlines() if line.startswith("default model")]
    model = Path(model_line.split(None, 2)[2])
    assert model.resolve().is_relative_to(venv.resolve()) and (model / "model.safetensors").is_file()
