"""Searches over quantizer choices, scored by error and measured ORT cost (auto granularity)."""
