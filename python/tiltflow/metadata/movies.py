r"""Finding the movies named by ``SubFramePath``.

The mdoc records the path on the microscope PC (``D:\DATA\...``, ``X:\...``, or a UNC path
``\\server\share\...``, sometimes with doubled separators). That path never exists on the
processing machine, so movies are matched by basename: first in ``--frames DIR``, then next to the
mdoc, then anywhere below the mdoc's folder (a few levels deep: SerialEM and Tomo5 put frames in
sub-folders such as ``frames/``).
"""

from __future__ import annotations

import os
from pathlib import Path

#: how deep below a session folder movies are looked for
MAX_DEPTH = 3


def windows_basename(path: str) -> str:
    """Last component of a Windows, UNC or POSIX path (empty components ignored)."""
    parts = [p for p in path.strip().replace("\\", "/").split("/") if p]
    return parts[-1] if parts else ""


class MovieIndex:
    """Basename -> file, built once per folder and reused for every tilt series in it."""

    def __init__(self, frames_dir: str | Path | None = None):
        self.frames_dir = Path(frames_dir) if frames_dir is not None else None
        self._cache: dict[Path, dict[str, Path]] = {}

    def _index(self, root: Path, max_depth: int) -> dict[str, Path]:
        key = Path(os.path.abspath(root))  # abspath, not resolve: keep symlinked frame folders
        if key in self._cache:
            return self._cache[key]
        found: dict[str, Path] = {}
        base_depth = len(key.parts)
        for dirpath, dirnames, filenames in os.walk(key):
            depth = len(Path(dirpath).parts) - base_depth
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if depth >= max_depth:
                dirnames[:] = []
            for f in sorted(filenames):
                if f.endswith(".mdoc") or f.startswith("."):
                    continue
                # the shallowest file wins (os.walk is top-down)
                found.setdefault(f, Path(dirpath) / f)
        self._cache[key] = found
        return found

    def find(self, sub_frame_path: str | None, mdoc_dir: Path) -> Path | None:
        """The movie for ``sub_frame_path``, or None."""
        if not sub_frame_path:
            return None
        name = windows_basename(sub_frame_path)
        if not name:
            return None
        if self.frames_dir is not None:
            direct = self.frames_dir / name
            if direct.is_file():
                return direct
            hit = self._index(self.frames_dir, MAX_DEPTH).get(name)
            if hit is not None:
                return hit
        direct = mdoc_dir / name
        if direct.is_file():
            return direct
        return self._index(mdoc_dir, MAX_DEPTH).get(name)

