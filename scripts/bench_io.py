"""Sinogram-range read time for three /exchange/data layouts (warm page cache)."""
import os
import tempfile
import time

import h5py
import numpy as np

from tomodl.io import read_dx, write_dx
from tomodl.io.dxchange import sinogram_chunks
os.chdir(tempfile.mkdtemp(prefix="tomodl_bench_io_"))  # scratch files, never in the repo
shape = (721, 64, 1024)
proj = np.random.default_rng(0).integers(0, 60000, shape).astype(np.uint16)
theta = np.linspace(0, np.pi, shape[0], endpoint=False)
write_dx("sino.h5", proj, None, None, theta, overwrite=True)
for name, chunks in (("contig", None), ("perproj", (1, 64, 1024))):
    with h5py.File(f"{name}.h5", "w") as f:
        f.create_dataset("/exchange/data", data=proj, chunks=chunks)
        f["/exchange/theta"] = np.rad2deg(theta)
        f["/exchange/theta"].attrs["units"] = "deg"
print("write_dx chunks", sinogram_chunks(shape, 2))
for name in ("sino", "contig", "perproj"):
    for sel, kw in (("4 rows", dict(sino=(30, 34))), ("1 proj", dict(proj=(100, 101)))):
        read_dx(f"{name}.h5", **kw)
        t = time.perf_counter()
        for _ in range(5):
            read_dx(f"{name}.h5", **kw)
        print(f"{name:8s} {sel}: {(time.perf_counter() - t) / 5 * 1e3:7.2f} ms")
