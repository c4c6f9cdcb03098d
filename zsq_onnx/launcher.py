"""The ``--nproc N`` launcher and its error-file protocol: run a command as N workers on this
node through torch's elastic launcher, and report the one line of the rank whose failure caused
the others.

A worker records its failure line where the elastic agent reads it (:func:`report_failure`);
the launcher then prints that line once, instead of every worker printing its own. The
collectives the workers use once running are in :mod:`zsq_onnx.distributed`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence

from zsq_onnx.errors import BadInputError, PeerFailedError

logger = logging.getLogger(__name__)

LAUNCHED_ENV = "ZSQ_LAUNCHED"  # set by launch(): the launcher prints the failing rank's line, the workers do not
ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"  # where torch's elastic agent reads a worker's failure message


def report_failure(line: str) -> bool:
    """Record a worker's one-line failure where the elastic agent reads it; True when the
    launcher of ``--nproc`` will print it, so the worker should not."""
    path = os.environ.get(ERROR_FILE_ENV)
    if path:
        try:
            with open(path, "w") as handle:
                json.dump({"message": line, "timestamp": int(time.time())}, handle)
        except OSError as exc:
            logger.debug("cannot write the error file %s: %s", path, exc)
    return bool(os.environ.get(LAUNCHED_ENV)) and bool(path)


def launch(nproc: int, args: Sequence[str], verbose: bool = False) -> tuple[int, str | None]:
    """Run ``python -m zsq_onnx *args`` as ``nproc`` workers on this node through torch's
    elastic launcher (what torchrun --standalone does); return the exit code and, on failure,
    the one line that says why (the first rank that failed on its own, before the ones it
    stopped)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise BadInputError(f"--nproc takes a number of processes >= 1, got {nproc}")
    saved = {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", LAUNCHED_ENV)}
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))  # as torchrun does
    os.environ[LAUNCHED_ENV] = "1"
    if not verbose:
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, rdzv_backend="c10d", rdzv_endpoint="localhost:0",
                          run_id=f"zsq-{os.getpid()}", max_restarts=0)
    try:
        elastic_launch(config, sys.executable)("-m", "zsq_onnx", *args)
    except ChildFailedError as exc:
        return _root_failure(exc.failures)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return 0, None


def _root_failure(failures: dict) -> tuple[int, str]:
    """The exit code and line of the failure that caused the others: a rank that failed on its
    own (not stopped by a peer, not killed by the agent) first, then the earliest."""
    def caused(item) -> tuple:
        rank, failure = item
        stopped = failure.exitcode == PeerFailedError.exit_code or failure.exitcode < 0
        return stopped, failure.timestamp, rank

    rank, failure = min(failures.items(), key=caused)
    if failure.exitcode < 0:
        return 1, f"error: rank {rank} was killed by signal {-failure.exitcode}"
    message = failure.message if isinstance(failure.message, str) and failure.error_file_data else f"error: rank {rank} exited with code {failure.exitcode}"
    return failure.exitcode, message
