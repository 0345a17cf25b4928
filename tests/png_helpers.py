"""Read a PNG (8-bit RGB or RGBA, not interlaced: what Chromium's screenshots are) into pixels,
with the standard library only, so the screenshot test needs no imaging package."""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from dataclasses import dataclass

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    channels: int  # 3 (RGB) or 4 (RGBA)
    rows: tuple[bytes, ...]

    def colours(self) -> Counter[tuple[int, int, int]]:
        """How many pixels have each RGB colour (alpha ignored)."""
        counts: Counter[tuple[int, int, int]] = Counter()
        c = self.channels
        for row in self.rows:
            counts.update(zip(row[0::c], row[1::c], row[2::c], strict=True))
        return counts


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(data: bytes) -> Image:
    if not data.startswith(_SIGNATURE):
        raise ValueError("not a PNG file")
    pos, idat, header = len(_SIGNATURE), bytearray(), None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, colour_type, _, _, interlace = header
    if depth != 8 or colour_type not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour_type}, "
                         f"interlace {interlace}")
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    if len(raw) != height * (stride + 1):
        raise ValueError("PNG data does not match its size")
    rows: list[bytes] = []
    prev = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], raw[start + 1:start + 1 + stride]
        if kind == 0:
            out = bytes(line)
        elif kind == 2:  # up
            out = bytes((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        else:
            cur = bytearray(line)
            for i in range(stride):
                left = cur[i - bpp] if i >= bpp else 0
                if kind == 1:  # sub
                    cur[i] = (cur[i] + left) & 0xFF
                elif kind == 3:  # average
                    cur[i] = (cur[i] + ((left + prev[i]) >> 1)) & 0xFF
                elif kind == 4:
                    upper_left = prev[i - bpp] if i >= bpp else 0
                    cur[i] = (cur[i] + _paeth(left, prev[i], upper_left)) & 0xFF
                else:
                    raise ValueError(f"unknown PNG filter {kind}")
            out = bytes(cur)
        rows.append(out)
        prev = out
    return Image(width, height, bpp, tuple(rows))


def write_png(width: int, height: int, pixels: list[list[tuple[int, int, int]]],
              filters: list[int]) -> bytes:
    """An RGB PNG whose row ``y`` is stored with filter ``filters[y]`` (to test the reader)."""
    raw = bytearray()
    prev = bytes(width * 3)
    for y in range(height):
        line = bytes(v for px in pixels[y] for v in px)
        kind = filters[y]
        enc = bytearray()
        for i, v in enumerate(line):
            left = line[i - 3] if i >= 3 else 0
            up = prev[i]
            upper_left = prev[i - 3] if i >= 3 else 0
            predictor = (0, left, up, (left + up) >> 1, _paeth(left, up, upper_left))[kind]
            enc.append((v - predictor) & 0xFF)
        raw += bytes([kind]) + enc
        prev = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    return (_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b""))
