"""A reward-curve PNG with no plotting library: pixels drawn by hand, encoded with zlib + struct.

matplotlib is not a Voltline dependency, and the demo must run offline on a bare install, so
this writes a plain RGB PNG: a framed plot of one or more series (values in [0, 1]), with
light grid lines at 0.25 steps. No text: the demo prints the numbers as a table.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

__all__ = ["write_curve_png"]

Color = tuple[int, int, int]


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _encode(pixels: list[bytearray], width: int, height: int) -> bytes:
    # Filter byte 0 ("none") before every row, as the format requires.
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    chunks = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def write_curve_png(
    path: str | Path,
    series: Sequence[tuple[Sequence[float | None], Color]],
    *,
    width: int = 640,
    height: int = 360,
    margin: int = 24,
) -> Path:
    """Draw each (values, color) series as a polyline over the same x range; None values are gaps."""
    pixels = [bytearray(b"\xff" * (width * 3)) for _ in range(height)]

    def put(x: int, y: int, color: Color, thick: int = 1) -> None:
        for dx in range(thick):
            for dy in range(thick):
                px, py = x + dx, y + dy
                if 0 <= px < width and 0 <= py < height:
                    pixels[py][px * 3 : px * 3 + 3] = bytes(color)

    def line(x0: int, y0: int, x1: int, y1: int, color: Color, thick: int = 1) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for i in range(steps + 1):
            put(round(x0 + (x1 - x0) * i / steps), round(y0 + (y1 - y0) * i / steps), color, thick)

    left, right, top, bottom = margin, width - margin, margin, height - margin
    for k in range(5):  # grid at reward 0, .25, .5, .75, 1
        y = round(bottom - (bottom - top) * k / 4)
        line(left, y, right, y, (225, 225, 225))
    line(left, top, left, bottom, (0, 0, 0))
    line(left, bottom, right, bottom, (0, 0, 0))
    longest = max((len(values) for values, _ in series), default=0)
    for values, color in series:
        prev: tuple[int, int] | None = None
        for i, v in enumerate(values):
            if v is None:
                prev = None
                continue
            x = round(left + (right - left) * (i / max(longest - 1, 1)))
            y = round(bottom - (bottom - top) * min(max(v, 0.0), 1.0))
            if prev is not None:
                line(prev[0], prev[1], x, y, color, 2)
            else:
                put(x, y, color, 2)
            prev = (x, y)
    out = Path(path)
    out.write_bytes(_encode(pixels, width, height))
    return out
