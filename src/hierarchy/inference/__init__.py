"""Inference: samplers, diagnostics, simulation-based calibration and batches of fits."""
