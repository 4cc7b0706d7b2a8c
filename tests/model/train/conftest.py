"""A tiny corpus (docs + stdlib look-alikes in tmp folders) and its tokenizer, built
once per session: the pieces under test see real files, not mocks."""

from __future__ import annotations

import textwrap

import pytest

from tinyserve_core.model.train import bpe, corpus

_PROSE = [
    "The list type is a mutable sequence. Lists may be constructed in several ways: using a pair of "
    "square brackets to denote the empty list, using square brackets separating items with commas, "
    "or using the type constructor list(iterable).",
    "A dictionary maps hashable values to arbitrary objects. Mappings are mutable objects. There is "
    "currently only one standard mapping type, the dictionary, and keys are compared by equality.",
    "To open a file for reading, call open() with the mode 'r'. The file object returned supports "
    "iteration over its lines, and read() returns the whole content as a string.",
]


def _code(i: int) -> str:
    return textwrap.dedent(
        f'''
        def function_{i}(value, items=None):
            """Return the value {i} times, or the items joined."""
            if items is None:
                items = []
            for index in range({i}):
                items.append(value * index)
            return items
        '''
    )


@pytest.fixture(scope="session")
def tiny_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("roots")
    docs, lib = root / "docs", root / "lib"
    for i in range(40):
        p = docs / f"section{i % 4}" / f"page{i}.rst.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n\n".join(_PROSE[(i + k) % 3] for k in range(6)) + f"\nPage {i} ends here.\n")
    for i in range(40):
        p = lib / f"pkg{i % 3}" / f"mod{i}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(_code(i) * 3)
    # Files the corpus must leave out.
    (lib / "site-packages").mkdir()
    (lib / "site-packages" / "thirdparty.py").write_text("THIRD_PARTY = 1\n")
    (lib / "pydoc_data").mkdir()
    (lib / "pydoc_data" / "topics.py").write_text("topics = {'list': 'The list type'}\n")
    (lib / "encodings").mkdir()
    (lib / "encodings" / "cp999.py").write_text('""" Python Character Mapping Codec cp999 generated """\n')
    return docs, lib


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_roots):
    docs = corpus.collect_documents(*tiny_roots)
    return bpe.train_tokenizer((d.text for d in docs), 512, min_vocab=256)
