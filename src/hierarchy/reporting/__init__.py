"""Reporting: pages, figures and disclosure control (the only layer that renders pages)."""
