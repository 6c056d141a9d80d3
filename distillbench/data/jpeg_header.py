"""JPEG frame headers, read without decoding: which files nvJPEG can take, and their size.

Workers read each header (microseconds) to draw the crop from the image size and to send the few
files nvJPEG would get wrong (CMYK/YCCK, Adobe RGB, 12-bit, arithmetic-coded, or not JPEG at all)
to PIL, which decodes them as ``default_loader`` does.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

# Frame headers nvJPEG decodes: baseline, extended sequential and progressive, all Huffman-coded.
_NVJPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2})
# 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) lie in the SOF range but are not frame headers.
_NOT_FRAMES = frozenset({0xC4, 0xC8, 0xCC})



@dataclass(frozen=True)
class JpegHeader:
    """What the first frame header of a JPEG says, and whether nvJPEG's RGB output is right for it."""

    frame: int
    precision: int
    height: int
    width: int
    components: int
    adobe_transform: int | None

    @property
    def nvjpeg_ok(self) -> bool:
        # Three components without YCbCr (Adobe transform 0) are stored RGB, which only libjpeg
        # undoes; four are CMYK/YCCK, which PIL converts differently from any JPEG decoder.
        ycbcr = self.components == 1 or (self.components == 3 and self.adobe_transform != 0)
        return self.frame in _NVJPEG_FRAMES and self.precision == 8 and self.height > 0 and self.width > 0 and ycbcr


def read_jpeg_header(data: bytes | bytearray) -> JpegHeader | None:
    """The frame header of ``data``, or None when it is not a JPEG (a PNG named .JPEG, say).

    Walks the marker segments up to the first SOF, which costs microseconds and no decoding.
    """
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos, adobe_transform = 2, None
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            # Stray bytes between segments: libjpeg skips them with a warning, so do we.
            pos = data.find(b"\xff", pos)
            if pos < 0:
                return None
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # segments without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        length = data[pos + 2] << 8 | data[pos + 3]
        if 0xC0 <= marker <= 0xCF and marker not in _NOT_FRAMES:
            if pos + 10 > n:
                return None
            return JpegHeader(
                frame=marker,
                precision=data[pos + 4],
                height=data[pos + 5] << 8 | data[pos + 6],
                width=data[pos + 7] << 8 | data[pos + 8],
                components=data[pos + 9],
                adobe_transform=adobe_transform,
            )
        if marker == 0xEE and length >= 12 and data[pos + 4:pos + 9] == b"Adobe":  # APP14
            adobe_transform = data[pos + 15] if pos + 15 < n else None
        pos += 2 + length
    return None


def pil_decode(data: bytes | bytearray) -> Tensor:
    """CHW uint8 RGB pixels as ``default_loader`` + ``convert('RGB')`` decodes them."""
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.array(image.convert("RGB"))
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
