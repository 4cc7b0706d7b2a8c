"""The block pool's key, painted from widgets/palette.py (so it cannot drift from what
the view draws): owner hues, the greys, fill by height, the refcount colour bar and
the event glyphs. Items wrap to the widget's width; `save_png` renders it for the docs."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics, QImage, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from . import palette as pal

ICON = 14
GAP = 14
MARGIN = 4


def _cell(p: QPainter, x: float, y: float, rgb, fill: float = 1.0, ref: int = 0, size: int = ICON):
    """One pool cell as the view draws it: owner colour filled from the bottom, the
    refcount strip on its right edge."""
    p.fillRect(QRectF(x, y, size, size), QColor(*pal.FREE_RGB))
    h = max(1.0, size * fill)
    p.fillRect(QRectF(x, y + size - h, size * 0.75, h), QColor(*rgb))
    if ref:
        p.fillRect(QRectF(x + size * 0.75, y, size * 0.25, size), QColor(*pal.refcount_rgb(ref)))


def _glyph(p: QPainter, kind: str, cx: float, cy: float, r: float = 5.5):
    p.setPen(QPen(QColor(*pal.EVENT_RGB), 1.6))
    p.setBrush(Qt.BrushStyle.NoBrush)
    g = pal.EVENT_GLYPHS[kind]
    if g == "o":
        p.drawEllipse(QPointF(cx, cy), r, r)
    elif g == "x":
        p.drawLine(QPointF(cx - r, cy - r), QPointF(cx + r, cy + r))
        p.drawLine(QPointF(cx - r, cy + r), QPointF(cx + r, cy - r))
    elif g == "t":      # pyqtgraph's "t": a triangle pointing down
        path = QPainterPath(QPointF(cx - r, cy - r * 0.7))
        path.lineTo(cx + r, cy - r * 0.7)
        path.lineTo(cx, cy + r)
        path.closeSubpath()
        p.drawPath(path)
    elif g == "s":
        p.drawRect(QRectF(cx - r, cy - r, 2 * r, 2 * r))
    else:               # the copy-on-write arrow, source -> copy
        p.drawLine(QPointF(cx - 2 * r, cy), QPointF(cx + 2 * r, cy))
        p.drawLine(QPointF(cx + 2 * r, cy), QPointF(cx + r, cy - r * 0.7))
        p.drawLine(QPointF(cx + 2 * r, cy), QPointF(cx + r, cy + r * 0.7))


def legend_items():
    """(icon width, painter(p, x, y), text) for every key entry, in reading order."""
    n = pal.NUM_OWNER_COLOURS
    items = [
        (n * 8 + 2, lambda p, x, y: [p.fillRect(QRectF(x + 8 * i, y, 8, ICON), QColor(*c))
                                     for i, c in enumerate(pal.OWNER_RGB)],
         "owner (9 hues)"),
        (ICON, lambda p, x, y: _cell(p, x, y, pal.OWNER_RGB[0], 0.5, 1), "height = tokens held"),
        (ICON, lambda p, x, y: p.fillRect(QRectF(x, y, ICON, ICON), QColor(*pal.FREE_RGB)), "free"),
        (ICON, lambda p, x, y: p.fillRect(QRectF(x, y, ICON, ICON), QColor(*pal.CACHED_RGB)),
         "cached-free"),
        (pal.REFCOUNT_MAX * 10, _refcount_bar, "refcount (right strip)"),
    ]
    for kind in ("alloc", "free", "evict", "preempt", "cow"):
        w = ICON * 2 + 4 if kind == "cow" else ICON
        items.append((w, lambda p, x, y, k=kind, w=w: _glyph(p, k, x + w / 2, y + ICON / 2),
                      pal.EVENT_SHORT[kind]))
    return items


def _refcount_bar(p: QPainter, x: float, y: float):
    for i, rgb in enumerate(pal.REFCOUNT_RGB):
        p.fillRect(QRectF(x + 10 * i, y, 10, ICON), QColor(*rgb))
    p.setPen(QColor(0, 0, 0))
    f = p.font()
    small = f.pointSizeF() * 0.75 if f.pointSizeF() > 0 else 7
    f.setPointSizeF(small)
    p.setFont(f)
    p.drawText(QRectF(x, y, 10, ICON), Qt.AlignmentFlag.AlignCenter, "1")
    p.drawText(QRectF(x + 10 * (pal.REFCOUNT_MAX - 1) - 4, y, 14, ICON), Qt.AlignmentFlag.AlignCenter, "8+")


class PoolLegend(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.items = legend_items()
        sp = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        sp.setHeightForWidth(True)
        self.setSizePolicy(sp)
        self.setToolTip("fill = owner; height = tokens held; right strip = refcount (the number "
                        "once zoomed in); events are white glyphs that fade in about a second")
        self.setAutoFillBackground(True)
        pl = self.palette()
        pl.setColor(pl.ColorRole.Window, QColor(*pal.BACKGROUND_RGB))
        pl.setColor(pl.ColorRole.WindowText, QColor(220, 220, 228))
        self.setPalette(pl)

    def _layout(self, width: int) -> tuple[list[tuple[float, float, int]], int]:
        """(x, y, item index) per entry and the height they need at `width`."""
        fm = QFontMetrics(self.font())
        line = max(ICON, fm.height()) + 4
        x = y = 0
        out = []
        for i, (w, _, text) in enumerate(self.items):
            full = w + 4 + fm.horizontalAdvance(text)
            if x > 0 and x + full > width:
                x, y = 0, y + line
            out.append((x, y, i))
            x += full + GAP
        return out, y + line

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self._layout(width - 2 * MARGIN)[1] + 2 * MARGIN

    def sizeHint(self) -> QSize:
        return QSize(400, self.heightForWidth(400))

    def minimumSizeHint(self) -> QSize:
        widest = max(w + 4 + QFontMetrics(self.font()).horizontalAdvance(t) for w, _, t in self.items)
        return QSize(widest + 2 * MARGIN, self.heightForWidth(max(self.width(), widest + 2 * MARGIN)))

    def paint(self, p: QPainter, width: int) -> None:
        fm = QFontMetrics(self.font())
        line = max(ICON, fm.height())
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        for x, y, i in self._layout(width)[0]:
            w, draw, text = self.items[i]
            p.save()
            draw(p, x, y + (line - ICON) / 2)
            p.restore()
            p.setPen(self.palette().windowText().color())
            p.drawText(QRectF(x + w + 4, y, width, line), Qt.AlignmentFlag.AlignVCenter, text)

    def paintEvent(self, ev):
        p = QPainter(self)
        p.translate(MARGIN, MARGIN)
        self.paint(p, self.width() - 2 * MARGIN)
        p.end()

    def save_png(self, path: str, width: int = 900, background=pal.BACKGROUND_RGB) -> None:
        """The key alone, on the plots' background (docs/VISUAL_LANGUAGE.md)."""
        h = self.heightForWidth(width) + 16
        img = QImage(width + 16, h, QImage.Format.Format_RGB32)
        img.fill(QColor(*background))
        p = QPainter(img)
        p.translate(8, 8)
        self.paint(p, width)
        p.end()
        if not img.save(path, "PNG"):
            raise OSError(f"could not write {path}")


def main(argv=None) -> int:
    """`python -m app.widgets.pool_legend OUT.png [WIDTH]`: the key for the docs."""
    import sys

    from PySide6.QtWidgets import QApplication
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m app.widgets.pool_legend OUT.png [WIDTH]", file=sys.stderr)
        return 2
    app = QApplication.instance() or QApplication(["pool-legend"])
    PoolLegend().save_png(args[0], int(args[1]) if len(args) > 1 else 900)
    del app
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
