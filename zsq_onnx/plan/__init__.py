"""What gets quantized and with which ranges: the rule table, calibration observers, bias correction measurements."""
