# SPDX-License-Identifier: BSD-3-Clause
"""Reading beamline scans (DXchange, NeXus NXtomo) and writing volumes (TIFF, HDF5, Zarr).

``tomodl.io`` is the only place where units and dtypes are converted: angles are returned in
float32 radians and detector counts as float32.  See ``docs/io.md``.
"""
from tomodl.io.atomic import check_output_path
from tomodl.io.dxchange import Scan, ScanInfo, read_dx, scan_info, write_dx
from tomodl.io.writers import (SAVE_FORMATS, VolumeWriter, open_writer, read_volume, write_png,
                               write_volume)

__all__ = ["Scan", "ScanInfo", "read_dx", "scan_info", "write_dx", "SAVE_FORMATS",
           "VolumeWriter", "open_writer", "write_volume", "read_volume", "write_png",
           "check_output_path"]
