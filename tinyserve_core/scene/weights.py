"""Compact weights of a trained field: only grid corners of cells that a training view can
see are stored (fp16), so a room at 2.5 cm voxels ships in a few MB.

Format: safetensors with `keep` and `occupancy` bitmasks (numpy packbits), `density`
[M] and `features` [M, F] for the kept corners, the MLP tensors, and JSON metadata
(grid, labels, training config and metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load as safetensors_load, save

from ..errors import ModelLoadError
from ..loaders import FileContext
from ..writers import write_bytes
from .field import SemanticGridField
from .spec import SCENES_DIR, SceneSpec
from .weights_meta import check_tensors, read_weights_file

FORMAT = "tinyserve-semantic-grid/1"


def weights_path(spec: SceneSpec) -> Path:
    base = Path(spec.path).parent if spec.path else SCENES_DIR
    return base / f"{spec.name}.weights.safetensors"


def corner_mask(occ: torch.Tensor) -> torch.Tensor:
    """Grid corners [Z, Y, X] touched by an occupied cell (occ is [X-1, Y-1, Z-1])."""
    cells = occ.permute(2, 1, 0).float()[None, None]
    return F.max_pool3d(F.pad(cells, (1, 1, 1, 1, 1, 1)), 2, stride=1)[0, 0] > 0


def save_weights(path: Path, field: SemanticGridField, occ: torch.Tensor, spec: SceneSpec, stats: dict) -> int:
    keep = corner_mask(occ) & field.active
    rows = field.corner_rows(keep)
    tensors = {
        "keep": np.packbits(keep.numpy().reshape(-1)),
        "occupancy": np.packbits(occ.numpy().reshape(-1)),
        "density": field.density.detach()[rows].half().numpy(),
        "features": field.features.detach()[rows].contiguous().half().numpy(),
    }
    for name, p in field.mlp.state_dict().items():
        tensors[f"mlp.{name}"] = p.detach().float().numpy()
    g = field.grid
    meta = {"format": FORMAT, "scene": spec.name, "labels": spec.labels,
            "grid": {"lo": g.lo, "hi": g.hi, "voxel": g.voxel},
            "feat_dim": field.features.shape[1], "hidden": field.mlp[0].out_features, "stats": stats}
    # serialised in memory (a few MB) and written through the one atomic writer: the
    # usual umask (safetensors' own writer left 0600), symlinks followed, no torn file
    data = save(tensors, metadata={"tinyserve": json.dumps(meta)})
    write_bytes(path, data, "weights", make_parents=True)
    return len(data)


def load_weights(path: Path, spec: SceneSpec | None = None) -> tuple[SemanticGridField, torch.Tensor, dict]:
    """(field, occupancy, metadata); errors name the file, the field and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(str(path), "no trained weights here; run `tinyserve train-scene` first")
    meta, data = read_weights_file(str(path), FORMAT)
    try:
        t = safetensors_load(data)
    except Exception as e:  # safetensors raises several types for a damaged file
        raise ModelLoadError(str(path), f"not a readable weights file ({e})") from None
    ctx = FileContext(str(path))
    check_tensors(t, meta, ctx)
    if spec is not None and meta["labels"] != spec.labels:
        raise ModelLoadError(str(path), f"trained for labels {meta['labels']}, scene {spec.name!r} has {spec.labels}")
    grid = meta.pop("grid_spec")
    nx, ny, nz = grid.shape
    keep = torch.from_numpy(np.unpackbits(t["keep"])[: nx * ny * nz].astype(bool)).view(nz, ny, nx)
    occ = torch.from_numpy(np.unpackbits(t["occupancy"])[: (nx - 1) * (ny - 1) * (nz - 1)].astype(bool))
    field = SemanticGridField(grid, len(meta["labels"]), meta["feat_dim"], meta["hidden"], active=keep)
    with torch.no_grad():
        field.density.copy_(torch.from_numpy(t["density"]).float())
        field.features.copy_(torch.from_numpy(t["features"]).float())
        try:
            field.mlp.load_state_dict({k[4:]: torch.from_numpy(v) for k, v in t.items() if k.startswith("mlp.")})
        except RuntimeError as e:  # missing, extra or misshapen MLP tensors
            raise ctx.error("mlp", str(e).splitlines()[0][:200]) from None
    return field, occ.view(nx - 1, ny - 1, nz - 1), meta
