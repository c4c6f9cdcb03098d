"""Command line: a thin click layer over the pipeline. torch is imported only by the stages.

The recipe's options are made from their declarations on the recipe's fields
(:data:`zsq_onnx.recipe.RECIPE_OPTIONS`): names, help, defaults, types and choices alike; only the
options that are no part of a recipe (files, gates, output) are written here.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from zsq_onnx.errors import BadInputError, ZsqError
from zsq_onnx.options import CalibrationMethod, Device, GranularityMode, Synthesizer
from zsq_onnx.recipe import RECIPE_OPTIONS
from zsq_onnx.recipe_flags import RecipeOption

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
logger = logging.getLogger(__name__)


_ARGV_KEY = "zsq.argv"


class _Group(click.Group):
    """Turns ZsqError into one line on stderr and its exit code; anything else into exit 1. It
    keeps the command line it parsed, which ``--nproc`` hands to its workers."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGV_KEY] = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:  # plain `zsq-onnx`: asking for help is no error
            click.echo(ctx.get_help())
            ctx.exit(0)
        except click.UsageError as exc:
            raise _OneLineUsageError(exc) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ZsqError as exc:
            _fail(ctx, f"error: {exc}", exc.exit_code)
        except click.UsageError as exc:
            _fail(ctx, _OneLineUsageError(exc).line(), exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # the one place that turns unexpected failures into exit 1
            logger.debug("traceback of the internal error", exc_info=exc)
            cause = exc.__cause__ or exc
            text = str(cause).strip()
            _fail(ctx, f"internal error: {type(cause).__name__}: {text.splitlines()[0] if text else ''}", 1)


class _OneLineUsageError(click.UsageError):
    """A usage error (unknown option, bad value, missing argument) shown as the one line every
    other exit 2 prints, naming the command, instead of click's usage block."""

    def __init__(self, error: click.UsageError) -> None:
        super().__init__(error.format_message(), error.ctx)

    def line(self) -> str:
        """``error: zsq-onnx convert: No such option: --bogus``, say."""
        where = f"{self.ctx.command_path}: " if self.ctx is not None else ""
        return f"error: {where}{self.format_message()}"

    def show(self, file=None) -> None:
        click.echo(self.line(), err=True, file=file)


def _fail(ctx: click.Context, line: str, code: int) -> None:
    """Print the failure's one line and exit with ``code``; a worker of ``--nproc`` leaves the
    line to its launcher (see :func:`zsq_onnx.launcher.report_failure`)."""
    from zsq_onnx.launcher import report_failure

    if not report_failure(line):
        click.echo(line, err=True)
    ctx.exit(code)


def _launch_workers(nproc: int) -> None:
    """With ``--nproc N`` > 1 outside a torch.distributed group, run this command as N workers
    (torch's launcher) and exit with their outcome; otherwise return, and this process works."""
    from zsq_onnx.distributed import requested_size
    from zsq_onnx.launcher import launch

    if nproc == 1 or requested_size() > 1:
        return
    ctx = click.get_current_context()
    code, line = launch(nproc, _without_nproc(ctx.find_root().meta[_ARGV_KEY]), verbose=logging.getLogger("zsq_onnx").level <= logging.INFO)
    if line is not None:
        click.echo(line, err=True)
    ctx.exit(code)


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` (or ``--nproc=N``)."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            kept.append(token)
    return kept


def _nproc_option(command):
    """--nproc: data-parallel workers on this node (torchrun does the same across nodes)."""
    return click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
                        help="Run as N data-parallel processes on this node (torch.distributed, gloo on CPU, nccl with --device cuda); "
                             "across nodes use torchrun ... -m zsq_onnx instead.")(command)


@click.group(cls=_Group)
@click.version_option(package_name="zsq-onnx")
@click.option("-v", "--verbose", count=True, help="Log on stderr: -v what each stage does (INFO), -vv details (DEBUG).")
def main(verbose: int) -> None:
    """zsq-onnx: data-free quantization of CNNs to deployable ONNX."""
    _configure_logging(verbose)


def _configure_logging(verbose: int) -> None:
    """The zsq_onnx loggers write to stderr at WARNING, INFO (-v) or DEBUG (-vv and more), for
    the duration of the command: a process that runs several (tests) keeps no stale handler."""
    handler = logging.StreamHandler(sys.stderr)
    rank = os.environ.get("RANK") if os.environ.get("WORLD_SIZE", "1") != "1" else None
    handler.setFormatter(logging.Formatter(LOG_FORMAT if rank is None else f"[rank {rank}] {LOG_FORMAT}"))
    package = logging.getLogger("zsq_onnx")
    level = package.level
    package.addHandler(handler)
    package.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING)

    def restore() -> None:
        package.removeHandler(handler)
        package.setLevel(level)

    click.get_current_context().call_on_close(restore)


def _choice(options: type[enum.StrEnum]) -> click.Choice:
    """The values of an options enum as a click choice."""
    return click.Choice([member.value for member in options])


def _recipe_options(command: str) -> Callable:
    """Decorator adding the recipe options of ``command`` (convert or synth), in the order of
    :data:`~zsq_onnx.recipe.RECIPE_OPTIONS`; each passes its value to ``build_recipe`` under its keyword."""
    def add(function):
        for option in reversed(RECIPE_OPTIONS):
            name = option.flag.option(command) if option.flag is not None else None
            if name is not None:
                function = _click_option(option, name)(function)
        return function

    return add


def _click_option(option: RecipeOption, name: str) -> Callable:
    """The click option ``name`` of ``option``: a flag for a bool field (``--x/--no-x`` an
    on/off switch), else typed, with the spelling's choices; the default shown where it has one."""
    if option.kind is bool and "/" not in name:
        return click.option(name, option.keyword, is_flag=True, help=option.flag.help)
    settings: dict[str, Any] = {"default": option.cli_default, "help": option.flag.help}
    if option.kind is not bool:
        choices = option.spelling.choices if option.spelling is not None else None
        settings["type"] = click.Choice(choices) if choices is not None else option.kind
    if option.cli_default is not None:
        settings["show_default"] = True
    return click.option(name, option.keyword, **settings)


def _preprocessing_options(command):
    """--input-scale/--mean/--std: preprocessing for .onnx files that do not record their own."""
    command = click.option("--std", default=None, help="Per-channel std, comma-separated (with --mean).")(command)
    command = click.option("--mean", default=None, help="Per-channel mean, comma-separated, after scaling.")(command)
    return click.option("--input-scale", type=float, default=None, help="Factor applied to raw pixel values first (e.g. 1/255).")(command)


def _foreign_options(command):
    """--output-name/--input-shape: what an .onnx file from elsewhere may leave open."""
    command = click.option("--input-shape", default=None, help="C,H,W for an .onnx model whose input has symbolic image dimensions.")(command)
    return click.option("--output-name", default=None, help="The classifier output of an .onnx model that has several.")(command)


def _foreign(output_name, input_shape):
    from zsq_onnx.io.foreign import ForeignOptions

    return ForeignOptions.from_flags(output_name, input_shape)


def _preprocessing(input_scale, mean, std):
    from zsq_onnx.io.preprocessing import Preprocessing

    if input_scale is None and mean is None and std is None:
        return None
    if mean is None or std is None:
        raise BadInputError("--mean and --std must be given together (with an optional --input-scale)")
    return Preprocessing.from_flags(input_scale if input_scale is not None else 1.0, mean, std)


@main.command()
@click.argument("model")
@click.option("-o", "--output", required=True, help="Where to write the quantized .onnx model.")
@click.option("--weights", help="Weights file (state dict) for zoo models that need one.")
@_recipe_options("convert")
@click.option("--synthetic-data", default=None, help="Reuse distilled inputs from `zsq-onnx synth` (.npz), or with --synthesizer generator the generator it saved.")
@click.option("--calibration-data", default=None, help="Calibrate on REAL images (.npz or class folders) instead.")
@click.option("--eval-data", default=None, help="Labelled images (.npz or class folders) to measure accuracy on.")
@click.option("--report", "report_path", default=None, help="Write the JSON report here (plus .md and .png beside it).")
@click.option("--min-agreement", type=float, default=None, help="Exit 3 when top-1 agreement with FP32 is below this (0..1).")
@click.option("--max-drop", type=float, default=None, help="Exit 3 when top-1 drops more than this many points.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_preprocessing_options
@_foreign_options
@_nproc_option
def convert(model, output, weights, synthetic_data, calibration_data, eval_data, report_path, min_agreement, max_drop, as_json, quiet, input_scale, mean, std,
            output_name, input_shape, nproc, **recipe_options) -> None:
    """Quantize MODEL (a zoo name or an .onnx file with BatchNorm) without data."""
    from zsq_onnx import distributed, pipeline
    from zsq_onnx.gates import Gates
    from zsq_onnx.recipe import build_recipe
    from zsq_onnx.validate import publish, render, report

    gates = Gates(min_agreement, max_drop)
    preprocessing = _preprocessing(input_scale, mean, std)
    foreign = _foreign(output_name, input_shape)
    recipe = build_recipe(**recipe_options)
    _refuse_idle_options(_CONVERT_IDLE)
    _check_report_name(report_path)
    _check_outputs([("-o", output), *(("--report", path) for path in (publish.paths(report_path) if report_path else []))],
                   {"MODEL": model, "--weights": weights, "--synthetic-data": synthetic_data, "--calibration-data": calibration_data, "--eval-data": eval_data})
    _check_device(recipe.finetune.device)
    _launch_workers(nproc)
    with distributed.joined(recipe.finetune.device) as group:
        result = pipeline.convert(
            model, output, recipe, weights=weights, eval_data=eval_data, report_path=report_path, progress=not quiet and sys.stderr.isatty(),
            synthetic_data=synthetic_data, calibration_data=calibration_data, preprocessing=preprocessing, gates=gates, foreign=foreign,
        )
    if not group.main:
        return
    click.echo(report.to_json(result.report) if as_json else render.summary(result.report))
    if not as_json:
        click.echo(f"wrote {output}" + (f" and {report_path}" if report_path else ""))


def _check_report_name(report_path: str | None) -> None:
    """BadInputError for a --report named like the files written beside it (its .md would
    replace an .md report, its .png a .png one)."""
    if report_path is not None and Path(report_path).suffix.lower() in (".md", ".png"):
        raise BadInputError(f"{report_path}: --report names the JSON report, and its .md and .png are written beside it: give it a .json name")


def _check_outputs(outputs: list[tuple[str, str | Path]], inputs: dict[str, str | None]) -> None:
    """Before any work: each file to write (by the option that names it; a report writes several)
    can be written, no two of them are one file, and none is a file the command reads."""
    from zsq_onnx.io.onnx_io import check_writable

    written: dict[str, str] = {}
    for flag, path in outputs:
        check_writable(path, flag)
        same = written.setdefault(os.path.realpath(path), flag)
        if same != flag:
            raise BadInputError(f"{path}: both {same} and {flag} would write it; give them different names")
    for flag, path in inputs.items():
        if path is not None and os.path.realpath(path) in written:
            raise BadInputError(f"{path}: {flag} reads it and {written[os.path.realpath(path)]} would overwrite it; write elsewhere")


def _check_device(device: str) -> None:
    """BadInputError for --device cuda where torch sees no CUDA device, before any work."""
    if device == Device.CUDA:
        from zsq_onnx.executors.torch_graph import torch_device

        torch_device(device)


@dataclass(frozen=True)
class _Idle:
    """Options that do nothing when ``applies(params)`` holds (``params``: the command's values by
    name); ``reason`` completes "OPTION does nothing ..." and may name values as ``{param}``."""

    options: tuple[str, ...]
    applies: Callable[[dict[str, Any]], bool]
    reason: str


def _finetunes(params: dict[str, Any]) -> bool:
    return params["finetune_steps"] > 0 or params["finetune_minutes"] is not None


def _generates(params: dict[str, Any]) -> bool:
    return params["synthesizer"] == Synthesizer.GENERATOR


def _distills(params: dict[str, Any]) -> bool:
    """Whether convert distills its inputs now (not read from a file, not generated)."""
    return params["synthetic_data"] is None and params["calibration_data"] is None and not _generates(params)


def _onnx_file(params: dict[str, Any]) -> bool:
    """Whether MODEL is an .onnx file (as :func:`zsq_onnx.pipeline.load_model` decides)."""
    return params["model"].endswith(".onnx") or Path(params["model"]).is_file()


_WEIGHTS_IDLE = _Idle(("weights",), _onnx_file, "for an .onnx MODEL: its weights are in the file ({model})")
_FOREIGN_IDLE = _Idle(("output_name", "input_shape"), lambda p: not _onnx_file(p), "for a zoo MODEL: --output-name and --input-shape apply to .onnx files")
_CONVERT_IDLE = (
    _Idle(("train_weights", "optimizer", "finetune_lr", "finetune_samples", "finetune_bn_loss"), lambda p: not _finetunes(p),
          "without fine-tuning: add --finetune-steps N or --finetune-minutes M"),
    _Idle(("finetune_samples",), lambda p: not _distills(p),
          "when the fine-tuning inputs are not distilled now (--synthetic-data, --calibration-data or --synthesizer generator give them)"),
    _Idle(("calibration_percentile",), lambda p: p["calibration_method"] != CalibrationMethod.PERCENTILE,
          "with --calibration-method {calibration_method}: it is the percentile of --calibration-method percentile"),
    _Idle(("act_granularity",), lambda p: p["granularity"] != GranularityMode.STATIC,
          "with --granularity {granularity}: it sets static activation scales (--granularity static)"),
    _Idle(("granularity_budget",), lambda p: p["granularity"] != GranularityMode.AUTO, "without --granularity auto: it is the latency budget of that search"),
    _Idle(("mp_weight_bits",), lambda p: not p["mixed_precision_enabled"], "without --mixed-precision: it lists the widths that search chooses from"),
    _Idle(("generator_steps", "generator_lr", "margin_low", "margin_high"), lambda p: not _generates(p),
          "with --synthesizer {synthesizer}: it sets the generator of --synthesizer generator"),
    _Idle(("margin_low", "margin_high"), lambda p: not _finetunes(p),
          "without fine-tuning: the margins shape the generator's game against the quantized model while it fine-tunes"),
    _Idle(("generator_steps",), lambda p: p["synthetic_data"] is not None, "with --synthetic-data: the saved generator is used as it is, without warm-up"),
    _Idle(("synth_steps", "synth_batch_size"), lambda p: p["synthetic_data"] is not None and not _generates(p),
          "with --synthetic-data: its saved batches are used as they are"),
    _Idle(("synth_steps",), lambda p: not _distills(p), "when nothing is distilled (--calibration-data or --synthesizer generator give the inputs)"),
    _Idle(("bits",), lambda p: p["wbits"] is not None and p["abits"] is not None, "with both --wbits and --abits, which override it"),
    _WEIGHTS_IDLE,
    _FOREIGN_IDLE,
)
_SYNTH_IDLE = (
    _Idle(("synth_steps", "synth_lr"), _generates, "with --synthesizer generator: it sets ZeroQ distillation; the generator has --generator-steps and --generator-lr"),
    _Idle(("generator_steps", "generator_lr"), lambda p: not _generates(p), "with --synthesizer {synthesizer}: it sets the generator of --synthesizer generator"),
    _WEIGHTS_IDLE,
    _FOREIGN_IDLE,
)


def _refuse_idle_options(rules: tuple[_Idle, ...]) -> None:
    """BadInputError for the first option the user gave (click's parameter source: the command
    line or the environment, not a default) that does nothing in the combination given."""
    ctx = click.get_current_context()
    given = {name for name in ctx.params if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}
    for rule in rules:
        idle = [name for name in rule.options if name in given]
        if idle and rule.applies(ctx.params):
            raise BadInputError(f"{_option_name(ctx, idle[0])} does nothing {rule.reason.format(**ctx.params)}")


def _option_name(ctx: click.Context, name: str) -> str:
    """How the user spells parameter ``name`` of the current command (its longest option)."""
    (param,) = [param for param in ctx.command.params if param.name == name]
    return max(param.opts, key=len)


@main.command()
@click.argument("model")
@click.option("-o", "--output", required=True, help="Where to write the FP32 .onnx model.")
@click.option("--weights", help="Weights file (state dict) for zoo models that need one.")
@_preprocessing_options
def export(model, output, weights, input_scale, mean, std) -> None:
    """Write MODEL's FP32 ONNX (BatchNorm kept) that the pipeline starts from."""
    from zsq_onnx import pipeline
    from zsq_onnx.io import onnx_io

    _refuse_idle_options((_WEIGHTS_IDLE,))
    preprocessing = _preprocessing(input_scale, mean, std)
    _check_outputs([("-o", output)], {"MODEL": model, "--weights": weights})
    loaded = pipeline.load_model(model, weights, preprocessing)
    onnx_io.save_onnx(loaded.model, output)
    click.echo(f"wrote {output}")


@main.command()
@click.argument("model")
@click.option("-o", "--output", required=True, help="Where to write the distilled inputs (.npz), or with --synthesizer generator the generator's weights.")
@click.option("--weights", help="Weights file (state dict) for zoo models that need one.")
@_recipe_options("synth")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_foreign_options
@_nproc_option
def synth(model, output, weights, quiet, output_name, input_shape, nproc, **recipe_options) -> None:
    """Distill calibration inputs from MODEL's BatchNorm statistics (ZeroQ) into an .npz, or
    train AdaDFQ's generator against MODEL and save its weights (--synthesizer generator)."""
    from zsq_onnx import distributed, pipeline
    from zsq_onnx.recipe import build_recipe
    from zsq_onnx.synth.distill import distill, save_synthetic

    recipe = build_recipe(**recipe_options)
    _refuse_idle_options(_SYNTH_IDLE)
    foreign = _foreign(output_name, input_shape)
    _check_outputs([("-o", output)], {"MODEL": model, "--weights": weights})
    _launch_workers(nproc)
    config = recipe.synth
    with distributed.joined() as group:
        loaded = pipeline.load_model(model, weights, foreign=foreign)
        progress = not quiet and sys.stderr.isatty() and group.main
        if config.synthesizer == Synthesizer.GENERATOR:
            result = pipeline.generated_inputs(loaded, recipe, progress=progress)
        else:
            result = distill(loaded.model, loaded.input_shape, config, recipe.seed, progress=progress, source=str(model))
        distributed.all_succeeded()
    if not group.main:
        return
    if config.synthesizer == Synthesizer.GENERATOR:
        from zsq_onnx.synth.generator import save_generator

        save_generator(result.game.generator, output)
        curve = f", loss {result.loss_curve[0]:.3f} -> {result.loss_curve[-1]:.3f}" if result.loss_curve else ""
        click.echo(f"{loaded.name}: trained the generator {config.generator.warmup_steps} steps in {result.seconds:.1f} s{curve}")
    else:
        save_synthetic(result, output, config, recipe.seed, loaded.name)
        click.echo(f"{loaded.name}: distilled {config.samples} samples in {result.seconds:.1f} s, "
                   f"BN-statistics loss {result.loss_curve[0]:.3f} -> {result.loss_curve[-1]:.3f}")
    click.echo(f"wrote {output}")


@main.command("eval")
@click.argument("model")
@click.option("--data", required=True, help="Labelled images: .npz (uint8 NHWC + labels) or class folders.")
@click.option("--reference", default=None, help="FP32 .onnx to compare against.")
@click.option("--provider", type=_choice(Device), default=Device.CPU.value, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@_preprocessing_options
def eval_command(model, data, reference, provider, as_json, input_scale, mean, std) -> None:
    """Top-1 of MODEL.onnx on DATA; with --reference, agreement and SQNR against it."""
    from zsq_onnx.validate import evaluate, report

    evaluation = evaluate.evaluate_files(model, data, reference, provider, _preprocessing(input_scale, mean, std))
    click.echo(report.to_json(evaluate.file_report(evaluation, model, reference)) if as_json else evaluate.describe(evaluation, model, reference))


@main.command("inspect")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def inspect_command(model, as_json) -> None:
    """Per quantizer of MODEL.onnx: role, bits, granularity, scale range."""
    from zsq_onnx.io import onnx_io
    from zsq_onnx.validate import inspection

    result = inspection.inspect_model(onnx_io.load_ir(model))
    click.echo(json.dumps(result, indent=2) if as_json else inspection.describe(result))
