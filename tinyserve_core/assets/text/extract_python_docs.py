"""Rebuild this folder's prompt corpus from the Python 3.11 documentation sources.

Run once by hand (`python tinyserve_core/assets/text/extract_python_docs.py`); the output is
committed, so nothing downloads or rebuilds at run time. It keeps the prose of the
tutorial, the FAQ and a few HOWTOs and drops what a reader would not call text:
reST directives, code blocks, tables, section rules and role markup."""

from __future__ import annotations

import re
import sys
from pathlib import Path

SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
DOCS = (
    [f"tutorial/{n}" for n in (
        "appetite", "interpreter", "introduction", "controlflow", "datastructures",
        "modules", "inputoutput", "errors", "classes", "stdlib", "stdlib2", "venv",
        "whatnow", "interactive", "floatingpoint", "appendix")]
    + [f"faq/{n}" for n in ("general", "programming", "design", "library", "extending",
                            "windows", "gui", "installed")]
    + [f"howto/{n}" for n in ("sorting", "unicode", "regex", "functional",
                              "argparse")]
)

_ROLE = re.compile(r":[a-zA-Z:]+:`!?~?([^`<]*?)(?:\s*<[^>]*>)?`")   # :func:`x <y>` -> x
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`__?")                    # `text <url>`_ -> text
_LITERAL = re.compile(r"``([^`]+)``")
_REF = re.compile(r"`([^`]+)`_{0,2}")
_RULE = re.compile(r"^([=\-~^*#+\"'`.:_])\1{3,}\s*$")


def _prose(rst: str) -> str:
    out: list[str] = []
    skip_indent: int | None = None     # inside a directive or literal block
    literal_next = False
    for raw in rst.splitlines():
        line = raw.rstrip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not line or indent > skip_indent:
                continue
            skip_indent = None
        if literal_next and line:
            literal_next = False
            if indent > 0:
                skip_indent = 0
                continue
        stripped = line.strip()
        if stripped.startswith(".. ") or stripped == "..":
            skip_indent = indent
            continue
        if _RULE.match(stripped) or stripped.startswith(("+-", "|", ">>>", "...")):
            continue
        if indent > 0 and not stripped.startswith(("* ", "- ", "#. ")) and out and not out[-1]:
            # an indented block after a blank line is a quote or code; prose is flush
            skip_indent = indent - 1
            continue
        if stripped.endswith("::"):
            literal_next = True
            stripped = stripped[:-2].rstrip()
            if stripped.endswith((" ", ":")) or not stripped:
                stripped = stripped.rstrip(" :")
            else:
                stripped += ":"
        stripped = _ROLE.sub(r"\1", stripped)
        stripped = _LINK.sub(r"\1", stripped)
        stripped = _LITERAL.sub(r"\1", stripped)
        stripped = _REF.sub(r"\1", stripped)
        stripped = stripped.replace("\\", "").replace("**", "").replace("*", "")
        if stripped or (out and out[-1]):
            out.append(stripped)
    text = "\n".join(out)
    # keep paragraphs of real sentences: headings and one-word fragments add nothing
    paras = [" ".join(p.split()) for p in text.split("\n\n")]
    return "\n\n".join(p for p in paras if len(p.split()) >= 8 and p[-1] in ".:?!)") + "\n"


def main(out_dir: Path) -> None:
    total = 0
    for doc in DOCS:
        text = _prose((SOURCES / f"{doc}.rst.txt").read_text(encoding="utf-8"))
        dest = out_dir / f"{doc.replace('/', '_')}.txt"
        dest.write_text(text, encoding="utf-8")
        total += len(text.encode())
    print(f"{len(DOCS)} files, {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
