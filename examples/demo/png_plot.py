"""A reward-curve PNG with no plotting library: pixels drawn by hand, encoded with zlib + struct.

matplotlib is not a Voltline dependency, and the demo must run offline on a bare install, so
this writes a plain RGB PNG: a framed plot of one or more series (values in [0, 1]), with
light grid lines at 0.25 steps, and text (title, tick values, legend) drawn with a tiny
built-in 5x7 bitmap font so the picture explains itself without the console table.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

__all__ = ["write_curve_png"]

Color = tuple[int, int, int]

# 5x7 glyphs, one hex byte per row from top to bottom; bit 0x10 is the leftmost column.
# Upper case only (lower case is drawn as upper case) to keep the table short.
# fmt: off
_GLYPHS = {
    "0": "0e11131519110e", "1": "040c040404040e", "2": "0e11010204081f", "3": "1f02040201110e",
    "4": "02060a121f0202", "5": "1f101e0101110e", "6": "0608101e11110e", "7": "1f010204080808",
    "8": "0e11110e11110e", "9": "0e11110f01020c", ".": "00000000000c0c", "-": "0000001f000000",
    ":": "000c0c000c0c00", "/": "01010204081010", "(": "02040808080402", ")": "08040202020408",
    " ": "00000000000000",
    "A": "0e11111f111111", "B": "1e11111e11111e", "C": "0e11101010110e", "D": "1c12111111121c",
    "E": "1f10101e10101f", "F": "1f10101e101010", "G": "0e11101711110f", "H": "1111111f111111",
    "I": "0e04040404040e", "J": "0702020202120c", "K": "11121418141211", "L": "1010101010101f",
    "M": "111b1515111111", "N": "11111915131111", "O": "0e11111111110e", "P": "1e11111e101010",
    "Q": "0e11111115120d", "R": "1e11111e141211", "S": "0f10100e01011e", "T": "1f040404040404",
    "U": "1111111111110e", "V": "11111111110a04", "W": "1111111515150a", "X": "11110a040a1111",
    "Y": "11110a04040404", "Z": "1f01020408101f",
}
# fmt: on
_FONT = {ch: bytes.fromhex(rows) for ch, rows in _GLYPHS.items()}
_TEXT = (70, 70, 70)


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _encode(pixels: list[bytearray], width: int, height: int) -> bytes:
    # Filter byte 0 ("none") before every row, as the format requires.
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    chunks = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def _text_width(text: str, scale: int = 1) -> int:
    # Each glyph is 5 columns plus 1 column of spacing; no spacing after the last one.
    return max(len(text) * 6 - 1, 0) * scale


def write_curve_png(
    path: str | Path,
    series: Sequence[tuple[Sequence[float | None], Color]],
    *,
    width: int = 640,
    height: int = 360,
    margin: int = 10,
    title: str = "",
    labels: Sequence[str] = (),
    x_label: str = "step",
    x_start: int = 1,
) -> Path:
    """Draw each (values, color) series as a polyline over the same x range; None values are gaps.

    `labels` names the series in a legend (same order as `series`); x tick values count from
    `x_start`, so index 0 of a series is step `x_start`.
    """
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

    def text(x: int, y: int, s: str, color: Color = _TEXT, scale: int = 1) -> None:
        # Characters outside the font render as blanks: a label must never break the demo.
        for n, ch in enumerate(s.upper()):
            for row, bits in enumerate(_FONT.get(ch, _FONT[" "])):
                for col in range(5):
                    if bits & (0x10 >> col):
                        put(x + (n * 6 + col) * scale, y + row * scale, color, scale)

    # Layout from the outside in: title row, legend row, plot; tick values to the left and below.
    left = margin + _text_width("0.00") + 5
    right = width - margin
    top = margin + (22 if title else 0) + (13 if labels else 0)
    bottom = height - margin - (9 if x_label else 0) - 11
    if title:
        text(margin, margin, title, (0, 0, 0), 2)
    if labels:  # right-aligned: a line sample, then the name
        items = [(name, color) for name, (_, color) in zip(labels, series, strict=False)]
        x = right - sum(18 + _text_width(name) + 12 for name, _ in items) + 12
        y = top - 11
        for name, color in items:
            line(x, y + 3, x + 13, y + 3, color, 2)
            text(x + 18, y, name)
            x += 18 + _text_width(name) + 12

    for k in range(5):  # grid at reward 0, .25, .5, .75, 1
        y = round(bottom - (bottom - top) * k / 4)
        line(left, y, right, y, (225, 225, 225))
        label = f"{k / 4:.2f}"
        text(left - 5 - _text_width(label), y - 3, label)
    line(left, top, left, bottom, (0, 0, 0))
    line(left, bottom, right, bottom, (0, 0, 0))

    longest = max((len(values) for values, _ in series), default=0)

    def x_of(i: int) -> int:
        return round(left + (right - left) * (i / max(longest - 1, 1)))

    # First, middle and last step, each centred on a tick but kept inside the image.
    for i in sorted({0, (longest - 1) // 2, longest - 1}) if longest else []:
        label = str(x_start + i)
        line(x_of(i), bottom, x_of(i), bottom + 3, (0, 0, 0))
        text(min(max(x_of(i) - _text_width(label) // 2, 0), width - _text_width(label)), bottom + 5, label)
    if x_label:
        text((left + right - _text_width(x_label)) // 2, bottom + 14, x_label)

    for values, color in series:
        prev: tuple[int, int] | None = None
        for i, v in enumerate(values):
            if v is None:
                prev = None
                continue
            x, y = x_of(i), round(bottom - (bottom - top) * min(max(v, 0.0), 1.0))
            if prev is not None:
                line(prev[0], prev[1], x, y, color, 2)
            else:
                put(x, y, color, 2)
            prev = (x, y)
    out = Path(path)
    out.write_bytes(_encode(pixels, width, height))
    return out
