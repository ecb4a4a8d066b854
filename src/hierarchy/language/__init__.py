"""The model language: formulas, model specs, prior sets, and the design arrays a spec makes from a
table."""
