"""User-facing errors: each carries a one-line message and the exit code the CLI returns."""

from __future__ import annotations


class ZsqError(Exception):
    """Base of every error the CLI reports as one line; ``exit_code`` is what the process returns."""

    exit_code = 1


class BadInputError(ZsqError):
    """The user's input (file, flag, model) cannot be used: exit code 2."""

    exit_code = 2


class NoBatchNormError(BadInputError):
    """The model has no BatchNormalization node, so it cannot be distilled data-free."""


class UnsupportedOpError(BadInputError):
    """A node uses an ONNX op that the torch executor does not implement."""


class AccuracyGateError(ZsqError):
    """An accuracy gate (--min-agreement, --max-drop) failed: exit code 3."""

    exit_code = 3


class InternalError(ZsqError):
    """A broken internal invariant: a bug in zsq-onnx, not in the user's input (exit code 1)."""


class PeerFailedError(ZsqError):
    """Another rank of a torch.distributed group failed, so this one stopped too: exit code 4
    (the failing rank reports the cause)."""

    exit_code = 4
