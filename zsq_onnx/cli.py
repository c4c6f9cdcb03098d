"""Command line: a thin click layer over the pipeline. torch is imported only by the stages."""

from __future__ import annotations

import json
import sys

import click

from zsq_onnx.errors import ZsqError


class _Group(click.Group):
    """Turns ZsqError into one line on stderr and its exit code; anything else into exit 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ZsqError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # the one place that turns unexpected failures into exit 1
            click.echo(f"internal error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", err=True)
            ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="zsq-onnx")
def main() -> None:
    """zsq-onnx: data-free quantization of CNNs to deployable ONNX."""


@main.command()
@click.argument("model")
@click.option("-o", "--output", required=True, help="Where to write the quantized .onnx model.")
@click.option("--weights", help="Weights file (state dict) for zoo models that need one.")
@click.option("--bits", default=None, help="Bit widths as W<w>A<a>, e.g. W8A8.")
@click.option("--wbits", type=int, default=None, help="Weight bits (overrides --bits).")
@click.option("--abits", type=int, default=None, help="Activation bits (overrides --bits).")
@click.option("--profile", default="ort-cpu", show_default=True, help="Deployment target.")
@click.option("--samples", type=int, default=None, help="Number of distilled calibration samples.")
@click.option("--synth-steps", type=int, default=None, help="Adam steps of ZeroQ distillation.")
@click.option("--eval-data", default=None, help="Labelled .npz images to measure accuracy on.")
@click.option("--report", "report_path", default=None, help="Write the JSON report here.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def convert(model, output, weights, bits, wbits, abits, profile, samples, synth_steps, eval_data, report_path, seed, as_json, quiet) -> None:
    """Quantize MODEL (a zoo name or an .onnx file with BatchNorm) without data."""
    from zsq_onnx import pipeline, report
    from zsq_onnx.recipe import build_recipe

    recipe = build_recipe(bits=bits, wbits=wbits, abits=abits, profile=profile, samples=samples, synth_steps=synth_steps, seed=seed)
    result = pipeline.convert(model, output, recipe, weights=weights, eval_data=eval_data, report_path=report_path, progress=not quiet and sys.stderr.isatty())
    click.echo(report.to_json(result.report) if as_json else report.summary(result.report))
    if not as_json:
        click.echo(f"wrote {output}" + (f" and {report_path}" if report_path else ""))


@main.command()
@click.argument("model")
@click.option("-o", "--output", required=True, help="Where to write the FP32 .onnx model.")
@click.option("--weights", help="Weights file (state dict) for zoo models that need one.")
def export(model, output, weights) -> None:
    """Write MODEL's FP32 ONNX (BatchNorm kept) that the pipeline starts from."""
    from zsq_onnx import onnx_io, pipeline

    loaded = pipeline.load_model(model, weights)
    onnx_io.save_onnx(loaded.model, output)
    click.echo(f"wrote {output}")


@main.command("eval")
@click.argument("model")
@click.option("--data", required=True, help="Labelled .npz images (uint8 NHWC + labels).")
@click.option("--reference", default=None, help="FP32 .onnx to compare against.")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def eval_command(model, data, reference, provider, as_json) -> None:
    """Top-1 of MODEL.onnx on DATA; with --reference, agreement and SQNR against it."""
    from zsq_onnx import validate

    result = validate.evaluate_files(model, data, reference, provider)
    click.echo(json.dumps(result, indent=2) if as_json else validate.describe(result))
