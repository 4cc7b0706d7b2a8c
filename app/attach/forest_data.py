"""The largest prefix trees of a server's cache, as compressed trees: a node is a
chain of blocks with one child each, so a shared prefix is one node whose children
are the chains that branch from it (visibly shared in a tree view).

Built in the attach worker from `model.parent_slots()` + the BlockMap's roots, with a
budget: at most `max_blocks` blocks are walked and `max_nodes` rows kept over all trees
(a tree widget of thousands of rows would cost the GUI thread a frame) (a tree's `blocks` is its full size; `truncated` marks what is not drawn)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ChainNode:
    first: int                 # slot of the chain's first block
    last: int                  # slot of its last block (hover decodes root..last)
    length: int                # blocks in this chain
    depth0: int                # depth of its first block (root = 1)
    subtree: int = 0           # blocks in this chain and below
    children: list["ChainNode"] = field(default_factory=list)
    truncated: int = 0         # children not kept (over the node budget)


@dataclass(frozen=True)
class Tree:
    root_uid: int
    rank: int
    medium: str
    blocks: int
    top: ChainNode


def top_trees(live: np.ndarray, parent: np.ndarray, root_uid: np.ndarray, rank: np.ndarray,
              medium: np.ndarray, media: tuple[str, ...], *, top_n: int = 12,
              max_blocks: int = 20_000, max_nodes: int = 400) -> list[Tree]:
    """`live`/`parent`: slots and parent slots (-1 = root), aligned with the BlockMap
    arrays `root_uid`, `rank`, `medium` (same slot order)."""
    if live.size == 0:
        return []
    # uids are small non-negative ints (one per block ever stored): count by bincount,
    # O(N), not a sort of a million roots
    all_counts = np.bincount(root_uid)
    chosen = np.flatnonzero(all_counts)
    chosen = chosen[np.argsort(-all_counts[chosen], kind="stable")[:top_n]]
    idx = np.flatnonzero(np.isin(root_uid, chosen))
    p, s = parent[idx], live[idx]
    order = np.argsort(p, kind="stable")             # children of x: a run of p_sorted == x
    kids = _Kids(p[order], s[order], int(live.max()) + 1)
    out, budget, nodes = [], [max_blocks], [max_nodes]
    for u in chosen.tolist():
        at = idx[(root_uid[idx] == u) & (p < 0)]
        if at.size == 0:
            continue                                 # a cycle of junk links: no root to draw
        j = int(at[0])
        out.append(Tree(u, int(rank[j]), media[int(medium[j])], int(all_counts[u]),
                        _compress(int(live[j]), kids, nodes, budget)))
    return out


class _Kids:
    """Children of a slot as a run of the parent-sorted slots: where each run starts
    and how long it is, by slot (O(capacity) arrays, O(1) per question)."""

    def __init__(self, p_sorted: np.ndarray, s_sorted: np.ndarray, capacity: int):
        self.s = s_sorted.tolist()
        has = p_sorted >= 0
        self.cnt = np.bincount(p_sorted[has], minlength=capacity)
        self.first = int((~has).sum()) + np.cumsum(self.cnt) - self.cnt

    def get(self, x: int) -> list[int]:
        a = int(self.first[x])
        return self.s[a:a + int(self.cnt[x])]


def _compress(root: int, kids: _Kids, nodes: list[int], budget: list[int]) -> ChainNode:
    """Chains of single children folded into one node; iterative (deep chains). Every
    block walked costs one of `budget` (shared by the trees): a huge tree is drawn to
    that depth, its chains cut short (their `truncated` says so)."""
    def chain(start: int, depth0: int) -> ChainNode:
        s, n = start, 1
        nxt = kids.get(s)
        while len(nxt) == 1 and budget[0] > 0:
            s, n = nxt[0], n + 1
            budget[0] -= 1
            nxt = kids.get(s)
        node = ChainNode(start, s, n, depth0)
        node.truncated = len(nxt) if len(nxt) == 1 else 0
        return node

    top = chain(root, 1)
    nodes[0] -= 1
    stack, post = [top], []
    while stack:
        node = stack.pop()
        post.append(node)
        if node.truncated:
            continue                               # cut short: its one child is not walked
        below = kids.get(node.last)
        for c in below:
            if nodes[0] <= 0 or budget[0] <= 0:
                node.truncated += 1
                continue
            budget[0] -= 1
            child = chain(c, node.depth0 + node.length)
            node.children.append(child)
            nodes[0] -= 1
            stack.append(child)
    for node in reversed(post):                    # children before parents
        node.subtree = node.length + sum(c.subtree for c in node.children)
        node.children.sort(key=lambda c: -c.subtree)
    return top
