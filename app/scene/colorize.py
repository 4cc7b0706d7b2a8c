"""Render outputs to 8-bit RGB images: the colour, depth, semantic labels, label entropy
and query relevancy views of one frame, and the label palette the legend shows."""

from __future__ import annotations

import numpy as np

OUTPUTS = ("RGB", "Depth", "Semantic labels", "Label entropy", "Query relevancy")

# Categorical colours chosen to stay apart from one another (Tableau 20 order); the
# background is white so objects read against it as in the RGB view.
_TAB20 = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
          (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
          (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229)]


def label_palette(n: int) -> np.ndarray:
    """[n, 3] uint8: class 0 (background) white, then the categorical colours; past the 20
    of Tableau (the apartment has 27 objects) golden-ratio hues at a darker value, so no
    two labels share a colour."""
    import colorsys

    extra = [tuple(round(255 * c) for c in colorsys.hsv_to_rgb((0.05 + 0.618034 * i) % 1.0, 0.7, 0.6))
             for i in range(max(0, n - 1 - len(_TAB20)))]
    pal = np.array([(255, 255, 255)] + (_TAB20 + extra)[:max(0, n - 1)], dtype=np.uint8).reshape(-1, 3)
    return pal[:n]


def _ramp(x: np.ndarray) -> np.ndarray:
    """A perceptually ordered dark-blue -> yellow ramp (viridis knots) for x in [0, 1]."""
    knots = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float32)
    t = np.clip(np.nan_to_num(x), 0, 1) * (len(knots) - 1)
    i = np.minimum(t.astype(int), len(knots) - 2)
    f = (t - i)[..., None]
    return (knots[i] * (1 - f) + knots[i + 1] * f).astype(np.uint8)


def _rgb8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def colorize(frame, output: str, relevancy: np.ndarray | None = None) -> np.ndarray:
    """[H, W, 3] uint8 for one of OUTPUTS; `frame` is a RenderResult."""
    if output == "RGB":
        return _rgb8(frame.rgb)
    if output == "Depth":
        hit = frame.acc > 0.5
        d = frame.depth
        if hit.any():
            lo, hi = np.percentile(d[hit], (1, 99))
            img = _ramp(1 - (d - lo) / max(1e-6, hi - lo))  # near is bright
        else:
            img = np.zeros(d.shape + (3,), np.uint8)
        img[~hit] = 255
        return img
    if output == "Semantic labels":
        return label_palette(frame.probs.shape[-1])[frame.label]
    if output == "Label entropy":
        return _ramp(frame.entropy / np.log(frame.probs.shape[-1]))
    if output == "Query relevancy":
        return relevancy_overlay(frame.rgb, relevancy)
    raise ValueError(f"output: must be one of {', '.join(OUTPUTS)}, got {output!r}")


def relevancy_overlay(rgb: np.ndarray, relevancy: np.ndarray | None) -> np.ndarray:
    """The colour image greyed and darkened, with relevant pixels tinted hot (red-yellow)."""
    grey = np.clip(rgb, 0, 1).mean(-1, keepdims=True) * 0.55
    base = np.repeat(grey, 3, -1)
    if relevancy is None:
        return _rgb8(base)
    r = np.clip(relevancy, 0, 1)[..., None]
    r = r * r  # objects far behind the best keep a small weight; squaring keeps them grey
    hot = np.concatenate([np.ones_like(r), np.clip(2 * r - 0.6, 0, 1), np.zeros_like(r)], -1)
    return _rgb8(base * (1 - r) + hot * r)
