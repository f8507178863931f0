"""Print the embed widget's size as JSON: raw, gzipped, minified, minified and gzipped.

    .venv/bin/python bench/widget_size.py

The minifier is jsmin (whitespace and comments only, no renaming), so the minified figures are
an upper bound of what a renaming minifier such as terser reaches.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from jsmin import jsmin

ROOT = Path(__file__).resolve().parent.parent
FILES = ["static/gofly/widget.js", "static/gofly/dashboard.js"]


def measure(path: Path) -> dict[str, int]:
    raw = path.read_bytes()
    minified = jsmin(raw.decode("utf-8")).encode("utf-8")
    return {
        "raw": len(raw),
        "gzip": len(gzip.compress(raw, 9)),
        "minified": len(minified),
        "minified_gzip": len(gzip.compress(minified, 9)),
    }


def main() -> None:
    print(json.dumps({name: measure(ROOT / name) for name in FILES}, indent=2))


if __name__ == "__main__":
    main()
