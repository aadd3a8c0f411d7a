"""Finding the files users placed in a builder's manual directory."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from umr_jax.errors import InputError


def find_first_named(manual_dir: Path, names: Sequence[str]) -> Path | None:
    """The file in `manual_dir` (searched recursively) with the first of `names` that exists, or
    None. Two files with that name in different folders are ambiguous: `InputError`."""
    for name in names:
        found = sorted(p for p in Path(manual_dir).rglob(name) if p.is_file())
        if len(found) > 1:
            raise InputError(f"{len(found)} files named {name} ({', '.join(str(p) for p in found[:3])}); keep one", manual_dir)
        if found:
            return found[0]
    return None
