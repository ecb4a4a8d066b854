"""Data in: neighbourhood tables and their validation, the reference geography, simulation with a known
truth, child-level extracts and the LA panel."""
