"""Voltline prompt optimization: textual gradients from an optimizer LLM, beam search over templates.

Found by name through the ``voltline.algorithms`` entry point (``voltline.algorithms.get("apo")``).
"""

from .apo import APO
from .templates import placeholders, render

__all__ = ["APO", "placeholders", "render"]
