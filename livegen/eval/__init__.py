"""Objective evaluation: metrics on note streams, comparison with a reference set, reports.

Context: setup (offline analysis; never on a real-time path).
"""
