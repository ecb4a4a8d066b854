"""The likelihood: the one linear predictor, the NumPyro density and its PyMC twin."""
