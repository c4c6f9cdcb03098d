"""``python -m zsq_onnx``: the CLI, as torchrun (``-m zsq_onnx``) and ``--nproc`` start its workers."""

from zsq_onnx.cli import main

main()
