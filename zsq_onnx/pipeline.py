"""The convert pipeline: load -> export -> synth -> fold BN -> calibrate -> quantize -> [finetune] -> emit -> validate.

Each stage is a plain function over ONNX models and arrays; :func:`convert` chains them, times
them, and writes the emitted model and the report only once everything has succeeded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass, ShapeInferencePass

from zsq_onnx import distributed
from zsq_onnx.errors import BadInputError, InternalError
from zsq_onnx.finetune.loop import FinetuneResult, finetune
from zsq_onnx.finetune.observe import Checkpoint
from zsq_onnx.gates import Gates
from zsq_onnx.io import onnx_io
from zsq_onnx.io.data import Dataset, load_dataset
from zsq_onnx.io.foreign import ForeignOptions, prepare, restore_interface
from zsq_onnx.io.preprocessing import Preprocessing
from zsq_onnx.options import ReconstructMode, Synthesizer
from zsq_onnx.passes import apply_passes
from zsq_onnx.passes.adaptive_activations import AdaptiveActivationsPass
from zsq_onnx.passes.fold_batchnorm import FoldBatchNormPass
from zsq_onnx.passes.fold_pad import FoldPadIntoConvPass
from zsq_onnx.plan.calibrate import METADATA_KEY as CALIBRATION_KEY
from zsq_onnx.plan.empirical_bias import EmpiricalBiasCorrectionPass
from zsq_onnx.plan.insertion import InsertionSettings, calibrate_plan, quantizer_passes
from zsq_onnx.plan.targets import QuantPlan, plan_quantization
from zsq_onnx.profiles import at_reduced_range, emit
from zsq_onnx.recipe import Recipe, target_notes
from zsq_onnx.reconstruct.block import BlockReconstructionPass
from zsq_onnx.reconstruct.stage import ReconstructWeightsPass, after_weight_quantizers, progress_bars
from zsq_onnx.search.granularity import METADATA_KEY as GRANULARITY_KEY
from zsq_onnx.search.granularity import choose_granularity
from zsq_onnx.search.mixed_precision import METADATA_KEY as PRECISION_KEY
from zsq_onnx.search.mixed_precision import PrecisionSearch, choose_bits
from zsq_onnx.synth.distill import SynthResult, distill, load_synthetic
from zsq_onnx.synth.pool import SyntheticPool
from zsq_onnx.validate import report
from zsq_onnx.validate.diagnostics import cross_check, float_layers, ort_fusion
from zsq_onnx.validate.evaluate import Evaluation, evaluate, validation_execution
from zsq_onnx.validate.metrics import require_classifier
from zsq_onnx.validate.publish import publish

logger = logging.getLogger(__name__)

CROSS_CHECK_MAX_BYTES = 2 << 20


@dataclass(frozen=True)
class LoadedModel:
    """An FP32 ONNX model with BatchNorm kept, its input shape (C, H, W) and preprocessing."""

    model: ir.Model
    name: str
    input_shape: tuple[int, ...]
    preprocessing: Preprocessing | None
    default_eval_data: Dataset | None = None


def load_model(
    source: str | Path, weights: str | Path | None = None, preprocessing: Preprocessing | None = None, foreign: ForeignOptions | None = None
) -> LoadedModel:
    """A zoo name (exported here, BN kept) or an .onnx path, as an FP32 model ready to convert.

    ``preprocessing`` overrides the recorded one and is written into the model's metadata. An
    .onnx file of any opset and batch size is prepared by :func:`zsq_onnx.io.foreign.prepare`
    (``foreign``: its output name and input shape)."""
    text = str(source)
    if text.endswith(".onnx") or Path(text).is_file():
        model = prepare(onnx_io.load_onnx(text), text, foreign)
        if preprocessing is not None:
            preprocessing.write_metadata(model)
        return LoadedModel(model, text, onnx_io.image_input_shape(model, text), Preprocessing.from_metadata(model.metadata_props))
    from zsq_onnx.io.export import export_module
    from zsq_onnx.models import get_entry

    if foreign is not None and foreign.given:
        raise BadInputError(f"{text}: --output-name and --input-shape apply to .onnx files, not to zoo models")
    entry = get_entry(text)
    if entry.needs_weights and weights is None:
        raise BadInputError(f"{entry.name} needs trained weights: pass --weights FILE (a state dict)")
    module = entry.build(Path(weights) if weights is not None else None)
    model = export_module(module, entry.input_shape, preprocessing or entry.preprocessing, entry.name)
    eval_data = entry.default_eval_data() if entry.default_eval_data else None
    return LoadedModel(model, entry.name, entry.input_shape, preprocessing or entry.preprocessing, eval_data)


def quantize(model: ir.Model, batches: list[np.ndarray], recipe: Recipe) -> ir.Model:
    """Fold BatchNorm, plan the quantizers the recipe's profile needs, calibrate them on
    ``batches`` and insert them. With ``--mixed-precision`` a search chooses each layer's weight
    bits and with ``--granularity auto`` each activation's granularity; their choices are recorded
    in the model's metadata (see :func:`recorded_choice`)."""
    folded = apply_passes(
        model, FoldBatchNormPass(), FoldPadIntoConvPass(), NameFixPass(), ShapeInferencePass(check_type=False, strict_mode=False, data_prop=False)
    )
    plan = target_plan(folded, recipe)
    choices = {}
    if recipe.mixed_precision.enabled:
        plan, choices[PRECISION_KEY] = choose_bits(folded, plan, batches, precision_search(recipe))
    if recipe.granularity == "auto":
        plan, choices[GRANULARITY_KEY] = choose_granularity(folded, plan, batches, recipe.profile, insertion_settings(recipe), recipe.granularity_budget)
    quantized = insert_quantizers(folded, plan, batches, recipe)
    quantized.metadata_props.update({key: json.dumps(choice.to_dict()) for key, choice in choices.items()})
    return quantized


def insert_quantizers(folded: ir.Model, plan: QuantPlan, batches: list[np.ndarray], recipe: Recipe) -> ir.Model:
    """Calibrate the static activation quantizers of ``plan`` on ``batches`` with the recipe's
    observer and insert every quantizer of ``plan`` into the BN-folded model; with bias
    correction, correct the float biases for the weights' quantization error on ``batches`` (see
    :mod:`zsq_onnx.plan.empirical_bias`) before they are quantized; with a weight rounding other
    than nearest, reconstruct the weights first (see :mod:`zsq_onnx.reconstruct`; block mode also
    learns the activation steps, against ``folded``), so that bias correction sees the rounded weights. The calibration (method,
    ranges, clipped fractions, bias changes) is recorded in the model's metadata for the report,
    and the profile for :func:`~zsq_onnx.profiles.emit`."""
    settings = insertion_settings(recipe)
    calibration = calibrate_plan(folded, plan, batches, settings)
    correction = EmpiricalBiasCorrectionPass(folded, plan.weights, batches) if recipe.bias_correction else None
    passes = quantizer_passes(plan, calibration.ranges, settings, correction)
    if recipe.reconstruct.enabled:
        if recipe.reconstruct.mode == ReconstructMode.BLOCK:
            reconstruction = BlockReconstructionPass(folded, plan.weights, batches, recipe.reconstruct, seed=recipe.seed)
        else:
            reconstruction = ReconstructWeightsPass(plan.weights, batches, recipe.reconstruct)
        passes = after_weight_quantizers(passes, reconstruction)
    quantized = apply_passes(folded, *passes)
    shifts = correction.shifts if correction is not None else {}
    record = {**calibration.to_dict(), "bias_correction": {"enabled": recipe.bias_correction, "max_abs_shift": shifts}}
    quantized.metadata_props[CALIBRATION_KEY] = json.dumps(record)
    recipe.profile.record(quantized)
    return quantized


def target_plan(folded: ir.Model, recipe: Recipe) -> QuantPlan:
    """The recipe's quantization plan for the BN-folded model: which tensors get quantizers and
    their specs, the 8-bit weights at 7 bits where the target reduces range."""
    plan = plan_quantization(folded.graph, recipe.weights, recipe.activations, recipe.activation_rules, recipe.keep_ends_8bit)
    if not recipe.reduces_range:
        return plan
    return QuantPlan({node: at_reduced_range(spec) for node, spec in plan.weights.items()}, plan.activations, plan.rules)


def precision_search(recipe: Recipe) -> PrecisionSearch:
    """What the mixed-precision search reads of ``recipe`` (see :class:`PrecisionSearch`)."""
    return PrecisionSearch(recipe.mixed_precision, recipe.profile, recipe.reduces_range, recipe.keep_ends_8bit, recipe.bias_correction, recipe.activations)


def insertion_settings(recipe: Recipe) -> InsertionSettings:
    """What inserting quantizers reads of ``recipe`` (see :class:`InsertionSettings`)."""
    profile = recipe.profile
    return InsertionSettings(
        recipe.calibration_method, recipe.calibration_percentile, profile.use_4bit_types,
        profile.activation_4bit_types(recipe.weights.bits, recipe.mixed_precision.enabled), profile.routes_all_readers(recipe.activations),
    )


def recorded_choice(model: ir.Model, key: str) -> dict | None:
    """A search's choice that :func:`quantize` recorded under ``key`` (``GRANULARITY_KEY``,
    ``PRECISION_KEY``), or None."""
    text = model.metadata_props.get(key)
    return json.loads(text) if text is not None else None


@dataclass
class StageTimer:
    """Wall-clock seconds per named stage."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block as stage ``name``."""
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        logger.info("stage %s: %.2f s", name, seconds)


@dataclass(frozen=True)
class ConversionResult:
    """What convert produced: the emitted model, its evaluation and the report."""

    model: ir.Model
    evaluation: Evaluation
    report: dict


def calibration_inputs(
    loaded: LoadedModel,
    recipe: Recipe,
    synthetic_data: str | Path | None = None,
    calibration_data: str | Path | None = None,
    progress: bool = True,
) -> SynthResult:
    """The inputs that calibrate the quantizers: distilled now (default), reused from a
    ``zsq-onnx synth`` file, or real images (``calibration_data``, the only path without BN).
    With the generator synthesizer they are generated, by a generator warmed up now or loaded
    from ``synthetic_data`` (a ``zsq-onnx synth --synthesizer generator`` file), and the result
    carries the generator's game on to fine-tuning."""
    if recipe.synth.synthesizer == Synthesizer.GENERATOR:
        if calibration_data is not None:
            raise BadInputError("--calibration-data calibrates on real images and --synthesizer generator on generated ones: give one of them")
        return generated_inputs(loaded, recipe, synthetic_data, progress)
    if calibration_data is not None:
        if loaded.preprocessing is None:
            raise BadInputError(f"{loaded.name}: carries no preprocessing metadata; pass --input-scale/--mean/--std")
        images = load_dataset(calibration_data, loaded.input_shape).images[: recipe.synth.samples]
        inputs = loaded.preprocessing.apply(images)
        size = recipe.synth.batch_size
        return SynthResult([inputs[i : i + size] for i in range(0, len(inputs), size)], [], {}, 0.0, source="real images")
    if synthetic_data is not None:
        return load_synthetic(synthetic_data, loaded.input_shape)
    samples = max(recipe.synth.samples, recipe.finetune.samples) if recipe.finetune.enabled else recipe.synth.samples
    return distill(loaded.model, loaded.input_shape, dataclasses.replace(recipe.synth, samples=samples), recipe.seed, progress, source=loaded.name)


def generated_inputs(loaded: LoadedModel, recipe: Recipe, generator_path: str | Path | None = None, progress: bool = True) -> SynthResult:
    """Calibration inputs from AdaDFQ's generator: warmed up against the FP32 model for the
    recipe's steps, or loaded from ``generator_path`` as saved (no further warm-up)."""
    from zsq_onnx.synth.adadfq import GeneratorGame, model_classes, train_generator
    from zsq_onnx.synth.generator import load_generator

    config = recipe.synth.generator
    generator = load_generator(generator_path, loaded.input_shape, model_classes(loaded.model, loaded.input_shape)) if generator_path is not None else None
    game = GeneratorGame(loaded.model, loaded.input_shape, config, recipe.seed, recipe.finetune.device, generator)
    steps = config.warmup_steps if generator is None else 0
    return train_generator(game, steps, recipe.synth.samples, recipe.synth.batch_size, progress, loaded.name)


def first_samples(batches: list[np.ndarray], count: int) -> list[np.ndarray]:
    """The batches holding the first ``count`` samples (the last one cut to fit)."""
    kept, total = [], 0
    for batch in batches:
        if total >= count:
            break
        kept.append(batch[: count - total])
        total += len(kept[-1])
    return kept


def tune(
    fp32: ir.Model, quantized: ir.Model, pool_inputs: np.ndarray, recipe: Recipe, progress: bool = True,
    checkpoint: Checkpoint | None = None, checkpoint_seconds: float = 60.0, game: Any = None,
) -> tuple[ir.Model, FinetuneResult]:
    """The fine-tuning stage: adaptive activation quantizers first when the recipe asks, then KD
    training on the synthetic pool, or with the generator synthesizer on batches from ``game``
    (:class:`~zsq_onnx.synth.adadfq.GeneratorGame`, see :func:`generated_inputs`), trained values
    written back into the graph (``checkpoint``: see :func:`zsq_onnx.finetune.loop.finetune`)."""
    if recipe.finetune.activation_quantizer == "adaptive":
        quantized = apply_passes(quantized, AdaptiveActivationsPass(recipe.seed))
    if recipe.synth.synthesizer == Synthesizer.GENERATOR:
        if game is None:
            raise InternalError("tune: the generator synthesizer needs the game that generated the calibration inputs")
        source = game
    else:
        source = SyntheticPool(pool_inputs, recipe.seed)
    return finetune(fp32, quantized, source, recipe.finetune, recipe.seed, progress, checkpoint, checkpoint_seconds)


def convert(
    source: str | Path,
    output: str | Path,
    recipe: Recipe | None = None,
    weights: str | Path | None = None,
    eval_data: str | Path | Dataset | None = None,
    report_path: str | Path | None = None,
    progress: bool = True,
    synthetic_data: str | Path | None = None,
    calibration_data: str | Path | None = None,
    preprocessing: Preprocessing | None = None,
    gates: Gates | None = None,
    foreign: ForeignOptions | None = None,
) -> ConversionResult:
    """Quantize ``source`` data-free and write the deployable model to ``output``.

    ``eval_data`` (an .npz path, a class folder or a Dataset of raw images) measures accuracy;
    without it the zoo model's own test split is used, or the calibration inputs (agreement
    and SQNR only). ``preprocessing`` replaces what the model's metadata records. ``gates``
    (:class:`~zsq_onnx.gates.Gates`) are checked before anything is written: when one
    fails, the model and report are kept under rejected names and AccuracyGateError is raised.
    ``foreign`` tells about an .onnx source (see :func:`load_model`); the emitted model keeps the
    input and output shapes its file declared.

    In a torch.distributed group (:mod:`zsq_onnx.distributed`) every rank runs every stage on
    its share of the work; rank 0 alone shows progress and writes, once every rank has finished,
    and returns the report (the other ranks return an empty one).
    """
    recipe = recipe or Recipe()
    progress = progress and distributed.world().main
    timer = StageTimer()
    start = time.perf_counter()
    gates = gates or Gates()
    with timer.stage("load"):
        loaded = load_model(source, weights, preprocessing, foreign)
        dataset = evaluation_data(loaded, eval_data, gates, str(source))
    with timer.stage("synth"):
        calibration = calibration_inputs(loaded, recipe, synthetic_data, calibration_data, progress)
    with timer.stage("quantize"), progress_bars(progress):
        quantized = quantize(loaded.model, first_samples(calibration.batches, recipe.synth.samples), recipe)
    tuned = None
    if recipe.finetune.enabled:
        with timer.stage("finetune"):
            quantized, tuned = tune(loaded.model, quantized, calibration.inputs, recipe, progress, game=calibration.game)
    with timer.stage("emit"):
        emitted = emit(quantized)
    with timer.stage("validate"):
        evaluation, inputs = evaluate_emitted(loaded, emitted, dataset, calibration)
        group = distributed.world()
        found = diagnose(emitted, inputs, recipe) if group.main else {}
    timer.seconds["total"] = time.perf_counter() - start
    distributed.all_succeeded()
    if not group.main:
        return ConversionResult(emitted, evaluation, {})
    if tuned is not None:
        found["finetune"] = report.finetune_section(tuned)
    emitted = restore_interface(emitted)
    content = report.build(loaded.name, recipe.to_dict(), evaluation, calibration, loaded.model, emitted, found, timer.seconds, group)
    publish(content, emitted, output, report_path, gates)
    return ConversionResult(emitted, evaluation, content)


def evaluate_emitted(loaded: LoadedModel, emitted: ir.Model, dataset: Dataset | None, calibration: SynthResult) -> tuple[Evaluation, np.ndarray]:
    """The emitted model measured against the FP32 one on ``dataset`` (labelled), else on the
    calibration inputs (agreement and SQNR only); with the preprocessed inputs it ran on."""
    if dataset is None:
        return evaluate(loaded.model, emitted, calibration.inputs, None, calibration.source), calibration.inputs
    inputs = loaded.preprocessing.apply(dataset.images)
    return evaluate(loaded.model, emitted, inputs, dataset.labels, dataset.name), inputs


def evaluation_data(loaded: LoadedModel, eval_data: str | Path | Dataset | None, gates: Gates, source: str) -> Dataset | None:
    """The labelled images ``convert`` evaluates on: ``eval_data`` loaded, else the zoo model's
    own test split, else None; BadInputError when they cannot be fed to the model or it is no
    classifier, or when ``gates`` need data that is absent."""
    dataset = load_dataset(eval_data, loaded.input_shape) if isinstance(eval_data, (str, Path)) else eval_data or loaded.default_eval_data
    if dataset is not None and loaded.preprocessing is None:
        raise BadInputError(f"{source}: carries no zsq preprocessing metadata, so raw images from {dataset.name} cannot be fed; pass --input-scale/--mean/--std")
    if dataset is not None:
        require_classifier(loaded.model.graph.outputs[0].shape, source)
    gates.check_data(dataset is not None, source)
    return dataset


def diagnose(emitted: ir.Model, inputs: np.ndarray, recipe: Recipe) -> dict:
    """Notes for the profile, layers left in float, the searches' choices (auto granularity,
    mixed precision), ORT CPU fusion counts (ort-cpu), and for small models a cross-check of ORT
    against onnx.reference."""
    profile = recipe.profile
    found: dict = {"notes": target_notes(recipe), "float_layers": float_layers(emitted), "warnings": []}
    for section, key in (("granularity_choice", GRANULARITY_KEY), ("mixed_precision", PRECISION_KEY)):
        choice = recorded_choice(emitted, key)
        if choice is not None:
            found[section] = choice
    if profile.reports_fusion:
        found["ort_cpu_fusion"] = ort_fusion(emitted)
    if sum(value.const_value.nbytes for value in emitted.graph.initializers.values()) <= CROSS_CHECK_MAX_BYTES:
        found["warnings"] = cross_check(emitted, inputs[:32], validation_execution(emitted)[0])
    return found
