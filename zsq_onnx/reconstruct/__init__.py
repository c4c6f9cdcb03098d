"""Weight reconstruction: rounding each weight by its layer's output error on the calibration
inputs rather than to the nearest level (GPTQ, AdaRound), between calibration and fine-tuning."""
