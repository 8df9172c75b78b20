"""Occupancy-grid ray marcher (work in progress)."""
