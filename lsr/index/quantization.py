"""Weight codes: float32 as is, float16 (stored as its uint16 bit pattern) or 8-bit with a scale.

Every code type decodes through a float32 lookup table (``None`` for float32), so kernels read
all three layouts the same way. Codes preserve order: a larger weight never gets a smaller code,
which keeps block maxima valid upper bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Quantization = Literal["uint8", "float16", "float32"]
QUANTIZATIONS: tuple[str, ...] = ("uint8", "float16", "float32")
_F16_MAX_CODE = np.uint16(0x7BFF)  # largest finite float16


@dataclass(frozen=True)
class Codec:
    """How weights are stored: ``kind`` and, for uint8, the weight of one code step."""

    kind: str
    scale: float = 1.0

    @classmethod
    def fit(cls, kind: str, max_weight: float) -> Codec:
        if kind not in QUANTIZATIONS:
            raise ValueError(
                f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {kind!r}"
            )
        if kind == "uint8":
            return cls(kind, float(max_weight) / 255.0 if max_weight > 0 else 1.0)
        return cls(kind)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype({"uint8": np.uint8, "float16": np.uint16, "float32": np.float32}[self.kind])

    def encode(self, weights: np.ndarray) -> np.ndarray:
        """Codes for positive weights; none becomes code 0, so no posting is lost."""
        weights = np.asarray(weights, dtype=np.float32)
        if self.kind == "float32":
            return weights.copy()
        if self.kind == "float16":
            codes = weights.astype(np.float16).view(np.uint16)
            return np.clip(codes, 1, _F16_MAX_CODE).astype(np.uint16)
        codes = np.rint(weights / np.float32(self.scale))
        return np.clip(codes, 1, 255).astype(np.uint8)

    def lut(self) -> np.ndarray | None:
        """float32 table from code to weight in *score units*, or None when codes are float32.

        For uint8 a score unit is one code step: kernels sum integers (exact, so ties stay ties)
        and scores are multiplied by :attr:`score_scale` once, on output.
        """
        if self.kind == "float32":
            return None
        if self.kind == "float16":
            table = (
                np.arange(65536, dtype=np.uint32)
                .astype(np.uint16)
                .view(np.float16)
                .astype(np.float32)
            )
            table[~np.isfinite(table)] = 0.0
            table[0x8000:] = 0.0  # negative codes never occur
            return table
        return np.arange(256, dtype=np.float32)

    @property
    def score_scale(self) -> float:
        """Factor from score units to weight units."""
        return self.scale if self.kind == "uint8" else 1.0

    def units(self, codes: np.ndarray) -> np.ndarray:
        """Codes as the kernels score them (score units, float32); × score_scale gives weights."""
        table = self.lut()
        return np.asarray(codes, dtype=np.float32) if table is None else table[codes]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Weights (float32) that the codes stand for."""
        table = self.lut()
        if table is None:
            return np.asarray(codes, dtype=np.float32)
        return (table[codes] * np.float32(self.score_scale)).astype(np.float32)

    def to_json(self) -> dict:
        return {"dtype": self.kind, "scale": self.scale}

    @classmethod
    def from_json(cls, data: dict) -> Codec:
        return cls(data["dtype"], float(data.get("scale", 1.0)))
