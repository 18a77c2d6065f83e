# SPDX-License-Identifier: BSD-3-Clause
"""Pre-processing options of ``tomodl recon`` (Tomocupy's names), shared by the commands that
read raw scans: :func:`corrections_options` adds them, :func:`corrections_from` builds the
:class:`~tomodl.recon.corrections.Corrections` from the parsed values."""
from __future__ import annotations

from dataclasses import fields

import click

from tomodl.recon.corrections import BINNINGS, FW_FILTERS, INPUT_VALUES, ROW_LOCAL, Corrections
from tomodl.recon.stripes import STRIPE_METHODS

_D = Corrections()

#: (option, click keyword arguments) in the order shown by --help.
OPTIONS = (
    ("--input-values", dict(type=click.Choice(list(INPUT_VALUES)), default=_D.input_values,
                            show_default=True,
                            help="What the projections hold: raw counts (normalized with the "
                                 "flats and darks, then -log) or line integrals (already -log'd)"
                                 "; auto: line integrals when the file has no flats and marks "
                                 "them (root attribute normalisation=minus_log).")),
    ("--remove-stripe-method", dict(type=click.Choice(list(STRIPE_METHODS)),
                                    default=_D.remove_stripe_method, show_default=True,
                                    help="Ring (stripe) removal before FBP: fw (Münch 2009 "
                                         "Fourier-wavelet), ti (Titarenko), vo-all (Vo 2018).")),
    ("--fw-sigma", dict(type=click.FloatRange(min=0, min_open=True), default=_D.fw_sigma,
                        show_default=True, help="fw: Gaussian damping width.")),
    ("--fw-filter", dict(type=click.Choice(FW_FILTERS), default=_D.fw_filter,
                         show_default=True, help="fw: wavelet.")),
    ("--fw-level", dict(type=click.IntRange(min=1), default=_D.fw_level, show_default=True,
                        help="fw: decomposition levels (clipped to the data size).")),
    ("--fw-pad/--no-fw-pad", dict(default=_D.fw_pad, show_default=True,
                                  help="fw: pad the sinograms first.")),
    ("--ti-beta", dict(type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
                       default=_D.ti_beta, show_default=True, help="ti: smoothing parameter.")),
    ("--ti-mask", dict(type=click.FloatRange(min=0, max=1, min_open=True), default=_D.ti_mask,
                       show_default=True, help="ti: centred fraction of the width corrected.")),
    ("--vo-all-snr", dict(type=click.FloatRange(min=0, min_open=True), default=_D.vo_all_snr,
                          show_default=True, help="vo-all: stripe detection ratio.")),
    ("--vo-all-la-size", dict(type=click.IntRange(min=1), default=_D.vo_all_la_size,
                              show_default=True, help="vo-all: window for large stripes (px).")),
    ("--vo-all-sm-size", dict(type=click.IntRange(min=1), default=_D.vo_all_sm_size,
                              show_default=True, help="vo-all: window for small stripes (px).")),
    ("--dezinger", dict(type=click.IntRange(min=0), default=_D.dezinger, show_default=True,
                        help="Median window (px) for zinger removal on the raw counts; 0 = off.")),
    ("--dezinger-threshold", dict(type=click.FloatRange(min=0), default=_D.dezinger_threshold,
                                  show_default=True,
                                  help="Counts above the local median that mark a zinger.")),
    ("--binning", dict(type=click.Choice([str(b) for b in BINNINGS]), default=str(_D.binning),
                       show_default=True, help="Average 2^k x 2^k detector pixels; "
                       "--rotation-axis and --start-row/--end-row stay in raw pixels.")),
    ("--start-proj", dict(type=int, default=None, help="First projection (default 0).")),
    ("--end-proj", dict(type=int, default=None,
                        help="Projection after the last one (exclusive; default all).")),
    ("--proj-step", dict(type=click.IntRange(min=1), default=_D.proj_step, show_default=True,
                         help="Use every K-th projection (what a sparser scan would give).")),
    ("--retrieve-phase-method", dict(type=click.Choice(["none", "paganin"]),
                                     default=_D.retrieve_phase_method, show_default=True,
                                     help="Phase retrieval on whole projections (Paganin 2002; "
                                          "needs --energy, --propagation-distance, "
                                          "--pixel-size).")),
    ("--retrieve-phase-alpha", dict(type=click.FloatRange(min=0, min_open=True),
                                    default=_D.retrieve_phase_alpha, show_default=True,
                                    help="paganin: beta/delta of the material.")),
    ("--energy", dict(type=click.FloatRange(min=0, min_open=True), default=None,
                      help="paganin: photon energy (keV).")),
    ("--propagation-distance", dict(type=click.FloatRange(min=0, min_open=True), default=None,
                                    help="paganin: sample to detector distance (mm).")),
    ("--pixel-size", dict(type=click.FloatRange(min=0, min_open=True), default=None,
                          help="paganin: detector pixel size (micrometres, before binning).")),
    ("--file-type", dict(type=click.Choice(["standard", "double_fov"]), default=_D.file_type,
                         show_default=True,
                         help="double_fov: a 360-degree scan with the axis near an edge, "
                              "stitched into a double-width 180-degree scan (the axis is found "
                              "automatically, or --rotation-axis on the original detector).")),
)


def corrections_options(func, names=None):
    """Add the :data:`OPTIONS` (those of the fields ``names`` only, if given) to a click
    command."""
    for name, kwargs in reversed(OPTIONS):
        if names is None or name.split("/")[0][2:].replace("-", "_") in names:
            func = click.option(name, **kwargs)(func)
    return func


def row_local_options(func):
    """Add the options of the row-local steps that change the FBP input (stripe removal,
    dezinger: :data:`tomodl.recon.corrections.ROW_LOCAL`) to a click command."""
    return corrections_options(func, ROW_LOCAL)


def corrections_from(params: dict) -> Corrections:
    """Pop the :data:`OPTIONS` values out of ``params`` (click's keyword arguments) into a
    :class:`Corrections`."""
    values = {f.name: params.pop(f.name) for f in fields(Corrections) if f.name in params}
    if "binning" in values:
        values["binning"] = int(values["binning"])
    return Corrections(**values)
