"""torch module -> ONNX (opset 21) with BatchNormalization nodes kept and a dynamic batch axis."""

from __future__ import annotations

import io
import logging
import warnings
from typing import TYPE_CHECKING

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import CheckerPass, IdentityEliminationPass, LiftConstantsToInitializersPass, NameFixPass, RemoveUnusedNodesPass

from zsq_onnx.io.preprocessing import Preprocessing
from zsq_onnx.passes import apply_passes
from zsq_onnx.passes.fold_constants import FoldConstantsPass

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

OPSET = 21
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_module(
    module: torch.nn.Module, input_shape: tuple[int, ...], preprocessing: Preprocessing, name: str
) -> ir.Model:
    """Export an eval-mode module to ONNX, keeping BatchNorm, recording preprocessing in metadata.

    Uses the TorchScript exporter with constant folding off: it keeps BatchNormalization nodes,
    takes milliseconds (the dynamo exporter takes seconds) and emits a plain op set.
    """
    import torch

    module = module.eval()
    example = torch.zeros(2, *input_shape)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            do_constant_folding=False,
            training=torch.onnx.TrainingMode.EVAL,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    model = ir.serde.deserialize_model(onnx.load_from_string(buffer.getvalue()))
    model.producer_name = "zsq-onnx"
    model.graph.name = name
    model.metadata_props.update({**preprocessing.to_metadata(), "zsq.source": name})
    model = tidy(model, CheckerPass(full_check=True))
    logger.info("%s: exported at opset %d, %d nodes, input [batch, %s]", name, OPSET, len(model.graph), ", ".join(map(str, input_shape)))
    return model


def tidy(model: ir.Model, *then: ir.passes.PassBase) -> ir.Model:
    """Name every node, remove Identity nodes, lift Constant nodes, fold constant subgraphs; then
    run the passes ``then``."""
    return apply_passes(
        model,
        NameFixPass(),
        LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        IdentityEliminationPass(),
        FoldConstantsPass(),
        RemoveUnusedNodesPass(),
        *then,
    )
