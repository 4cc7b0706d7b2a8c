"""Rebuild heldout/: the documentation files the shipped model never trained on.

Run once by hand from the repository root (`python
tinyserve_core/assets/text/extract_heldout_docs.py [DOCS_ROOT]`, DOCS_ROOT defaulting to
the sources of Debian's python3.11-doc); the output is committed, so `eval selection`
and the shipped-model tests read the same text on every host. The files are copied byte
for byte under their names relative to DOCS_ROOT, chosen by the training split rule
(`corpus.is_heldout`) at the shipped model's heldout_frac, and README.md lists them."""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

from tinyserve_core.model.train import corpus

README = """# Held-out documentation text

The Python 3.11 documentation sources that the shipped model's training split held out
(`corpus.is_heldout(name, {frac})`, the `heldout_frac` of
`models/tinyserve-lm/train_log.json`): the model never trained on them, so `tinyserve eval
selection` and the shipped-model tests measure on them, the same text on every host.

* Source: `{root}` of Debian's `python3.11-doc`
  ({version}), copied byte for byte under the same relative names. {count} files,
  {kib:.0f} KiB.
* Regenerate: `python tinyserve_core/assets/text/extract_heldout_docs.py [DOCS_ROOT]`
  from the repository root.
* Licence: Copyright © 2001-2023 Python Software Foundation; All Rights Reserved.
  Distributed under the PSF License Agreement, reproduced in `../LICENSE`.

The prompt corpus loader skips this folder: held-out text is never prompt text.

Files:

{files}
"""


def _package_version(docs_root: Path) -> str:
    # <doc>/python3.11/html/_sources -> <doc>/python3.11-doc/changelog.Debian.gz, whose first
    # line reads "python3.11 (3.11.2-6+deb12u9) bookworm-security; urgency=medium"
    changelog = docs_root.parents[2] / corpus.DOCS_PACKAGE / "changelog.Debian.gz"
    try:
        first = gzip.open(changelog, "rt", encoding="utf-8").readline()
    except OSError:
        return "version unknown"
    return "version " + first.split("(", 1)[-1].split(")", 1)[0]


def main(docs_root: Path, out_dir: Path) -> None:
    if not docs_root.is_dir():
        sys.exit(f"{docs_root} is not a folder: install the Debian package {corpus.DOCS_PACKAGE}")
    picked = corpus.heldout_doc_files(docs_root, corpus.SHIPPED_HELDOUT_FRAC)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    total = 0
    for name, src in picked:
        dest = out_dir / src.relative_to(docs_root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        total += dest.stat().st_size
    files = "\n".join(f"* `{src.relative_to(docs_root).as_posix()}`" for _, src in picked)
    (out_dir / "README.md").write_text(README.format(
        frac=corpus.SHIPPED_HELDOUT_FRAC, root=corpus.DEFAULT_DOCS_ROOT, version=_package_version(docs_root),
        count=len(picked), kib=total / 1024, files=files), encoding="utf-8")
    print(f"{len(picked)} files, {total / 1024:.0f} KiB -> {out_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else corpus.DEFAULT_DOCS_ROOT,
         Path(__file__).parent / "heldout")
