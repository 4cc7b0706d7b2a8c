"""Image and label metrics for held-out views: PSNR, SSIM (Wang et al. 2004: 11-tap
Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03) and mean IoU over a whole view set."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .analytic import render_analytic
from .camera import HELDOUT_RINGS, camera_ring
from .spec import SceneSpec


def psnr(mse: float) -> float:
    return -10 * math.log10(max(mse, 1e-12))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two [H, W, C] images in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = 0.01**2, 0.03**2
    f = lambda x: gaussian_filter(x, sigma=1.5, truncate=3.5)  # noqa: E731  (radius 5: the 11-tap window)
    vals = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        mx, my = f(x), f(y)
        sxx, syy, sxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(s.mean())
    return float(np.mean(vals))


def confusion(pred: np.ndarray, gt: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(gt.ravel() * k + pred.ravel(), minlength=k * k).reshape(k, k)


def miou(conf: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean IoU over the classes present in the ground truth, and per-class IoU (nan if absent)."""
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    present = conf.sum(1) > 0
    iou = np.where(present, inter / np.maximum(union, 1), np.nan)
    return float(np.nanmean(iou)), iou


def evaluate_views(spec: SceneSpec, render: Callable, size: int = 128) -> dict:
    """Render each held-out camera with `render(cam) -> RenderResult` and score it against
    the analytic ground truth."""
    k = len(spec.labels)
    conf = np.zeros((k, k), dtype=np.int64)
    ps, ss = [], []
    for cam in camera_ring(spec.camera_target, spec.camera_distance, HELDOUT_RINGS, size):
        gt = render_analytic(spec, cam)
        r = render(cam)
        ps.append(psnr(float(((r.rgb - gt["rgb"]) ** 2).mean())))
        ss.append(ssim(r.rgb, gt["rgb"]))
        conf += confusion(r.label, gt["label"], k)
    m, per_class = miou(conf)
    return {"psnr": float(np.mean(ps)), "psnr_min": float(np.min(ps)), "ssim": float(np.mean(ss)), "miou": m,
            "iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(spec.labels, per_class)},
            "views": len(ps), "size": size}
