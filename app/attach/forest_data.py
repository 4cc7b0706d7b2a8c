"""The largest prefix trees of a server's cache, as compressed trees: a node is a
chain of blocks with one child each, so a shared prefix is one node whose children
are the chains that branch from it (visibly shared in a tree view).

Built in the attach worker from `model.parent_slots()` + the BlockMap's roots, with a
budget: at most `max_blocks` blocks are walked and `max_nodes` nodes kept per tree (a
larger tree says how many blocks it has beyond what is drawn)."""

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
              max_blocks: int = 60_000, max_nodes: int = 300) -> list[Tree]:
    """`live`/`parent`: slots and parent slots (-1 = root), aligned with the BlockMap
    arrays `root_uid`, `rank`, `medium` (same slot order)."""
    if live.size == 0:
        return []
    uids, first_idx, counts = np.unique(root_uid, return_index=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top_n]
    chosen, budget = [], max_blocks
    for i in order.tolist():
        if counts[i] <= budget or not chosen:
            chosen.append(i)
            budget -= int(counts[i])
    sel = np.isin(root_uid, uids[chosen])
    kids: dict[int, list[int]] = {}
    roots: dict[int, int] = {}                     # root uid -> root slot
    for s, p, u in zip(live[sel].tolist(), parent[sel].tolist(), root_uid[sel].tolist()):
        if p < 0:
            roots[u] = s
        else:
            kids.setdefault(p, []).append(s)
    out = []
    for i in chosen:
        u = int(uids[i])
        if u not in roots:
            continue                               # a cycle of junk links: no root to draw
        j = int(first_idx[i])
        out.append(Tree(u, int(rank[j]), media[int(medium[j])], int(counts[i]),
                        _compress(roots[u], kids, max_nodes)))
    return out


def _compress(root: int, kids: dict[int, list[int]], max_nodes: int) -> ChainNode:
    """Chains of single children folded into one node; iterative (deep chains)."""
    def chain(start: int, depth0: int) -> ChainNode:
        s, n = start, 1
        while len(kids.get(s, ())) == 1:
            s, n = kids[s][0], n + 1
        return ChainNode(start, s, n, depth0)

    top = chain(root, 1)
    nodes, stack, post = 1, [top], []
    while stack:
        node = stack.pop()
        post.append(node)
        below = kids.get(node.last, [])
        for c in below:
            if nodes >= max_nodes:
                node.truncated += 1
                continue
            child = chain(c, node.depth0 + node.length)
            node.children.append(child)
            nodes += 1
            stack.append(child)
    for node in reversed(post):                    # children before parents
        node.subtree = node.length + sum(c.subtree for c in node.children)
        node.children.sort(key=lambda c: -c.subtree)
    return top
