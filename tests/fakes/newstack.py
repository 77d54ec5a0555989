"""Fake IMOD ``newstack -fileinlist LIST -output OUT [-bin N]``, with the real program's file handling.

Like IMOD's newstack it renames an output that already exists to ``OUT~`` before writing the new one
(``imodBackupFile``, IMOD ``libcfshr/b3dutil.c``: "Renames an existing file named [filename] to filename~");
this is what left ``.<name>.part.mrc~`` files next to stacks built with the real IMOD 4.8 newstack when
tiltflow pre-created its temporary output. The file of inputs is read as newstack reads it (line 1 = number
of files, then a path line and a section line per file), binning averages ``N x N`` blocks of the centre.
No real newstack console log is kept in tests/data, so the fake prints nothing on success; failures print
IMOD's error form ``ERROR: NEWSTACK - ...`` (``exitError``, b3dutil.c).
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    import mrcfile
    import numpy as np

    args = sys.argv[1:]
    opts = dict(zip(args[::2], args[1::2], strict=False))
    if os.environ.get("FAKE_NEWSTACK_FAIL"):
        print("ERROR: NEWSTACK - Opening input file: No such file or directory")
        return 1
    lines = [ln.strip() for ln in open(opts["-fileinlist"]) if ln.strip()]
    n = int(lines[0])
    files = lines[1:1 + 2 * n:2]
    b = int(opts.get("-bin", 1))
    imgs, ps = [], 1.0
    for f in files:
        with mrcfile.open(f, permissive=True) as m:
            a = np.asarray(m.data, np.float32)
            ps = float(m.voxel_size.x)
        ny, nx = a.shape
        oy, ox = (ny % b) // 2, (nx % b) // 2
        imgs.append(a[oy:oy + ny // b * b, ox:ox + nx // b * b].reshape(ny // b, b, nx // b, b).mean(axis=(1, 3)))
    out = opts["-output"]
    if os.path.exists(out):  # imodBackupFile: remove an old "out~", rename "out" to it
        if os.path.exists(out + "~"):
            os.remove(out + "~")
        os.rename(out, out + "~")
    if os.environ.get("FAKE_NEWSTACK_NO_OUTPUT"):
        return 0
    with mrcfile.new(out) as m:
        m.set_data(np.stack(imgs).astype(np.float32))
        m.voxel_size = ps * b
    return 0
