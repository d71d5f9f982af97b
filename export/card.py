"""What every model card (a package's README.md) shares: its frame of sections, and how figures are written.

Context: setup (export; never imported by the host).
"""

from __future__ import annotations


def percent(share: float) -> str:
    """A share as a card writes it: 0.2581 -> '25.8%'."""
    return f"{100 * share:.1f}%"
