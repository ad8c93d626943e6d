"""Write data/corpus/natural/: real English prose the project may redistribute, from Python itself.

Source: the Python Language Reference as shipped inside every CPython installation
(`pydoc_data.topics`, the text `help()` shows), copyright the Python Software Foundation,
distributed under the PSF License Agreement, which allows copying and redistribution with the
licence and copyright notice kept (written next to the text as LICENSE-PSF.txt).
Kept: prose paragraphs only (at least 200 characters, at least one full stop, no code,
no grammar rules, no indented blocks), each joined onto one line, in topic order.

The FFN-memory section of the demo reads this text: real prose (not the template sentences of
tiny_corpus.txt), so the upper layers' key/value agreement shows above its random baseline.
Run: python data/make_natural_corpus.py
"""

import pydoc_data.topics as topics
import re
import sys
from pathlib import Path

OUT = Path(__file__).parent / "corpus" / "natural"


def prose(text: str) -> list[str]:
    paras = [p.strip("\n") for p in re.split(r"\n\s*\n", text)]
    keep = []
    for p in paras:
        if not p or p.startswith((" ", ">>>", "*", "-")) or len(p) < 200 or "." not in p:
            continue
        if re.search(r"[{}=]{2}|::=|\(\)\s*$", p):
            continue
        keep.append(" ".join(line.strip() for line in p.splitlines()))
    return keep


def psf_licence() -> str:
    lic = Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "LICENSE.txt"
    text = lic.read_text(encoding="utf-8")
    start = text.index("PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2")
    end = text.index("BEOPEN.COM LICENSE AGREEMENT")
    return text[start:end].strip() + "\n"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    paras = [p for key in sorted(topics.topics) for p in prose(topics.topics[key])]
    (OUT / "python_reference.txt").write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    (OUT / "LICENSE-PSF.txt").write_text(
        f"python_reference.txt: prose paragraphs of the Python Language Reference, from\n"
        f"pydoc_data.topics of CPython {sys.version.split()[0]}, extracted by data/make_natural_corpus.py.\n"
        f"Copyright (c) 2001 Python Software Foundation; All Rights Reserved.\n"
        f"Used and redistributed under the licence below.\n\n" + psf_licence(), encoding="utf-8")


if __name__ == "__main__":
    main()
