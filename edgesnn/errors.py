"""Exceptions that edgesnn raises on purpose. Every message says what, where and what would be right."""

from __future__ import annotations


class EdgesnnError(Exception):
    """Base class of every error edgesnn raises on purpose."""


class FormatError(EdgesnnError, ValueError):
    """A .esnn file (or byte string) is malformed: truncated, corrupted, foreign or of another version.

    ``section`` names the part of the file and ``offset`` the byte offset where the problem was found.
    """

    def __init__(self, message: str, *, section: str | None = None, offset: int | None = None):
        where = []
        if section is not None:
            where.append(f"section {section}")
        if offset is not None:
            where.append(f"byte offset {offset}")
        full = f"{message} ({', '.join(where)})" if where else message
        super().__init__(full)
        self.section = section
        self.offset = offset


class ModelError(EdgesnnError, ValueError):
    """A Model (built by hand, imported or loaded) is inconsistent: shapes, bit widths, ranges, overflow."""


class GraphError(ModelError):
    """A float Graph is inconsistent, or a source model cannot be expressed as one
    (unsupported op or layer, malformed file, padding the integer layers cannot represent)."""


class ConversionError(GraphError):
    """A source network cannot be converted to integer layers without changing what it computes.

    ``problems`` lists every node that will not convert (not only the first), each a
    :class:`Problem` with the node, its op, the source framework's own layer name, why, and what to
    change; the message lists them all.
    """

    def __init__(self, message: str, problems: list | None = None):
        self.problems = list(problems or [])
        super().__init__(message)


class PrecisionError(ConversionError):
    """Every layer converted exactly, but the 8/8-bit integer model does not keep the float model's output:
    under 25 dB SNR at some output position on the calibration samples it was checked on (up to 128, spread
    over the set; out of sample: each of 8 folds through a model calibrated on the others), or on more than
    1 in 10 of the batches of half of them (so that a model cannot pass because its good inputs outweigh its
    bad ones: other batches would fall under the bar); its activation ranges do not hold on samples they
    did not see, or the 8-bit rounding of a deep, badly conditioned network compounds. es.convert refuses
    with it by default.

    ``fidelity`` is what was measured (``samples``; ``snr_db``, ``worst_position_snr_db`` and
    ``worst_position`` on all of them; ``half_samples``, ``half_batches`` and ``half_batch_p10_snr_db``,
    the worst-position SNR that 9 in 10 of the batches of half of them keep; ``worst_half_snr_db``, the
    worst such batch, recorded; ``decided_by``, ``folds``, ``in_sample`` (the same on the samples the model
    was calibrated on), ``per_channel_activations`` and ``tried`` (every other candidate measured);
    ``falls_most``: the layer where the SNR falls most, with the SNR at its inputs and at its output); ``model`` is the refused integer Model, to inspect (es.compare) or to use knowingly.
    ``es.convert(..., on_low_fidelity="warn")`` returns the model with an es.PrecisionWarning instead.
    """

    def __init__(self, message: str, *, fidelity: dict | None = None, model=None):
        super().__init__(message)
        self.fidelity = dict(fidelity or {})
        self.model = model


class UnknownNameError(EdgesnnError, KeyError):
    """No plugin registered an importer, frontend or device of this name."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class PluginError(EdgesnnError):
    """A plugin failed to register: duplicate name, bad hook signature, or an exception while registering."""


class DeviceError(EdgesnnError):
    """A device cannot run a model, or failed while running it."""


class PrecisionWarning(UserWarning):
    """A conversion the caller let through under the fidelity bar: ``es.convert(..., on_low_fidelity="warn")``
    at 8/8 bits kept under 25 dB SNR at some output position on the calibration samples, out of sample (by default that
    is an es.PrecisionError). The message is the PrecisionError's."""
