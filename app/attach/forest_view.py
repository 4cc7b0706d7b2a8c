"""The largest prefix trees as a tree widget: each row a chain of blocks, a shared
prefix a row whose children are the chains branching from it. Hovering a row asks the
worker for the chain's text (root .. the row's last block), decoded with the
tokenizer when one was given; the answer becomes the row's tooltip."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QHeaderView, QLabel, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from ..widgets.legend import flexible
from .block_image import TREE_RGB
from .forest_data import ChainNode, Tree

SLOT_ROLE = Qt.ItemDataRole.UserRole


class ForestView(QWidget):
    chain_hovered = Signal(int)        # last slot of the hovered chain
    chain_clicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.header = flexible(QLabel("Prefix forest: the largest trees (a row = a chain of blocks; "
                                      "rows under a row share its prefix)"))
        lay.addWidget(self.header)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(4)
        self.tree.setHeaderLabels(["chain", "blocks", "blocks below", "depth"])
        self.tree.setMouseTracking(True)
        self.tree.setUniformRowHeights(True)
        head = self.tree.header()
        head.setStretchLastSection(False)
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in (1, 2, 3):
            head.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemEntered.connect(lambda it, _c: self._hovered(it))
        self.tree.itemClicked.connect(lambda it, _c: self.chain_clicked.emit(int(it.data(0, SLOT_ROLE))))
        lay.addWidget(self.tree, 1)
        self.trees: list[Tree] = []
        self.items: dict[int, QTreeWidgetItem] = {}      # last slot -> row
        self._text: dict[int, str] = {}

    def set_forest(self, trees: list[Tree]) -> None:
        if _signature(trees) == _signature(self.trees):
            return                                   # same shape: keep rows (and tooltips)
        expanded = {int(it.data(0, SLOT_ROLE)) for it in self.items.values() if it.isExpanded()}
        self.trees = trees
        self.items.clear()
        self._text.clear()
        self.tree.clear()
        for t in trees:
            rgb = TREE_RGB[t.root_uid % len(TREE_RGB)]
            top = self._node(self.tree, t.top, f"r{t.rank} {t.medium}: ", QColor(*(int(v) for v in rgb)))
            top.setText(2, f"{t.blocks:,}")
            top.setExpanded(True)
        for slot in expanded:
            if slot in self.items:
                self.items[slot].setExpanded(True)

    def _node(self, parent, node: ChainNode, prefix: str, colour: QColor) -> QTreeWidgetItem:
        it = QTreeWidgetItem(parent)
        shared = f", shared by {len(node.children)}" if len(node.children) > 1 else ""
        it.setText(0, f"{prefix}{node.length} block{'s' if node.length > 1 else ''}{shared}")
        it.setText(1, str(node.length))
        it.setText(2, f"{node.subtree:,}" + (f" +{node.truncated} chains not drawn" if node.truncated else ""))
        it.setText(3, f"{node.depth0}..{node.depth0 + node.length - 1}")
        it.setForeground(0, QBrush(colour))
        it.setData(0, SLOT_ROLE, node.last)
        it.setToolTip(0, "hover: asking for the chain's text...")
        self.items[node.last] = it
        for c in node.children:
            self._node(it, c, "", colour)
        return it

    def _hovered(self, it: QTreeWidgetItem) -> None:
        slot = int(it.data(0, SLOT_ROLE))
        if slot not in self._text:
            self.chain_hovered.emit(slot)

    def chain_text(self, slot: int) -> str | None:
        return self._text.get(slot)

    def set_text(self, slot: int, text: str) -> None:
        """The chain text of a hovered row, from the worker."""
        self._text[slot] = text
        it = self.items.get(slot)
        if it is not None:
            it.setToolTip(0, text[-1500:])


def _signature(trees: list[Tree]) -> tuple:
    def node(n: ChainNode) -> tuple:
        return (n.last, n.length, n.subtree, n.truncated, tuple(node(c) for c in n.children))
    return tuple((t.root_uid, t.blocks, node(t.top)) for t in trees)
