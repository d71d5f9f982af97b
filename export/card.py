"""What every model card (a package's README.md) shares: its frame of sections, and how figures are written.

Context: setup (export; never imported by the host).
"""

from __future__ import annotations

from collections.abc import Mapping


def percent(share: float) -> str:
    """A share as a card writes it: 0.2581 -> '25.8%'."""
    return f"{100 * share:.1f}%"


def render_card(name: str, about: str, sections: Mapping[str, str]) -> str:
    """A model card in the one shape every family's card has: the package's name as the title, the paragraph
    that says what the model is (its family, the seed it follows, its host kind), then the family's sections
    in order, each a heading and its text (Data, the model and training, what is the seed's and what differs,
    the held-out figures, how it plays, limits). A family writes only the text; the frame is this one."""
    parts = [
        f"# {name}",
        about.strip("\n"),
        *(f"## {heading}\n\n{text.strip(chr(10))}" for heading, text in sections.items()),
    ]
    return "\n\n".join(parts) + "\n"
