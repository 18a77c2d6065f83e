# SPDX-License-Identifier: BSD-3-Clause
"""The volume pipeline's public names in one place (a façade; nothing is defined here).

======================================  ==================================================
:mod:`tomodl.recon.config`              :class:`ReconConfig`, :class:`ReconResult`, constants
:mod:`tomodl.recon.chunks`              selected rows, rows per chunk, chunks still to do
:mod:`tomodl.recon.stages`              load, pre-process, centre, denoiser, reconstruct
:mod:`tomodl.recon.provenance`          output path and the provenance record
:mod:`tomodl.recon.volume`              :func:`reconstruct_file`: planning, resume, running
:mod:`tomodl.recon.try_mode`            one slice per trial centre
:mod:`tomodl.recon.distributed`         the chunks on a Dask cluster
======================================  ==================================================
"""
from __future__ import annotations

from tomodl.recon.chunks import chunks_todo, plan_chunks, plan_memory, select_rows
from tomodl.recon.config import (OUTPUT_SUFFIX, RECONSTRUCTION_TYPES, RESUME_MODES, Job,
                                 ReconConfig, ReconResult)
from tomodl.recon.provenance import output_path, provenance
from tomodl.recon.stages import (load_chunk, prepare_denoiser, preprocess_chunk,
                                 reconstruct_chunk, resolve_center)
from tomodl.recon.volume import reconstruct_file

__all__ = ["OUTPUT_SUFFIX", "RECONSTRUCTION_TYPES", "RESUME_MODES", "Job", "ReconConfig",
           "ReconResult", "chunks_todo", "load_chunk", "output_path", "plan_chunks",
           "plan_memory", "prepare_denoiser", "preprocess_chunk", "provenance",
           "reconstruct_chunk", "reconstruct_file", "resolve_center", "select_rows"]
