"""4-bit copies of the vector cache's unit rows, for a fast first pass over large indexes.

An exact float32 scan reads 4 bytes per dimension per row (512 MB per query at 100,000
1280-d rows, ~25 ms on 2 cores). The 4-bit copy is an eighth of that: each group of 64
dimensions of a row keeps 16 levels between its own minimum and maximum, scanned by torch's
int4 weight x bfloat16 kernel (``torch._weight_int4pack_mm_for_cpu``, the kernel behind
4-bit weight-only LLM inference on CPU). bench/ann.py, 100,000 1280-d rows, 2 cores, one run:
p50 6.4 ms, against 15.5 for its int8 sibling (which this module used before) and 25 for the
exact scan. The approximate scores only choose candidates; the cache scores those exactly
from the float32 rows (recall@10 1.0 with 200 candidates in that run).

The kernel is a private torch op with an undocumented layout, learnt by probing it:
- codes are packed by ``torch._convert_weight_to_int4pack_for_cpu``, which interleaves
  blocks of 64 rows: changing one row changes its whole block, so a write repacks the blocks
  it touches from the float32 rows (blocks are independent: checked);
- a value is ``(code - 8) * scale + zero`` with ``scale`` and ``zero`` per row and group, in
  a contiguous ``[groups, rows, 2]`` bfloat16 tensor (a strided view gives wrong scores);
- group sizes are 32..256, and the row count a multiple of 16.
So columns are padded to whole groups and rows to whole blocks. Where torch or the kernel is
missing, or it disagrees with a float product at first use, the first pass is off and the
cache scans exactly."""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

GROUP = 64  # dimensions per scale and zero
BLOCK = 64  # rows the packed layout interleaves
_LEVELS = 15
# Blocks coded at a time (8,192 rows): bounds the float copies a large write makes.
_BLOCKS_AT_ONCE = 128


def _padded(count: int, multiple: int) -> int:
    return -(-count // multiple) * multiple


class QuantisedRows:
    """4-bit codes of the rows of a float32 matrix, by slot (``set`` after each write).
    Made only where ``available()``."""

    def __init__(self, dims: int) -> None:
        import torch

        self.dims = dims
        self.columns = _padded(dims, GROUP)
        self.capacity = 0
        self.packed: npt.NDArray[np.uint8] = np.zeros((0, self.columns // 2), dtype=np.uint8)
        # [groups, capacity, 2] bfloat16, as the kernel takes them (of the first rows only,
        # a contiguous copy: _scale_zero_of).
        self.scale_zero = torch.zeros((self.columns // GROUP, 0, 2), dtype=torch.bfloat16)
        self._first_rows: tuple[int, Any] | None = None

    def grow(self, capacity: int) -> None:
        """Room for ``capacity`` rows, keeping those held."""
        import torch

        if capacity <= self.capacity:
            return
        capacity = _padded(max(capacity, self.capacity + self.capacity // 2), BLOCK)
        packed = np.zeros((capacity, self.columns // 2), dtype=np.uint8)
        packed[: self.capacity] = self.packed
        scale_zero = torch.zeros((self.columns // GROUP, capacity, 2), dtype=torch.bfloat16)
        scale_zero[:, : self.capacity] = self.scale_zero
        self.packed, self.scale_zero, self.capacity = packed, scale_zero, capacity
        self._first_rows = None

    def set(self, slots: npt.NDArray[np.intp], matrix: FloatArray) -> None:
        """Re-codes the blocks holding ``slots`` from ``matrix`` (every row, by slot)."""
        if slots.size == 0:
            return
        import torch

        self.grow(int(slots.max()) + 1)
        blocks = np.unique(slots // BLOCK)
        for first in range(0, blocks.size, _BLOCKS_AT_ONCE):
            rows = (
                blocks[first : first + _BLOCKS_AT_ONCE, None] * BLOCK + np.arange(BLOCK)
            ).ravel()
            vectors = np.zeros((rows.size, self.columns), dtype=np.float32)
            held = rows < matrix.shape[0]
            vectors[held, : self.dims] = matrix[rows[held]]
            packed, scale_zero = _encoded(vectors)
            self.packed[rows] = packed
            self.scale_zero[:, torch.from_numpy(rows)] = scale_zero
        self._first_rows = None

    def scores(self, query: FloatArray, size: int) -> FloatArray | None:
        """Approximate cosines of the first ``size`` rows with the unit ``query``; None if
        the kernel fails (the caller scans exactly)."""
        rows = _padded(size, BLOCK)
        padded_query = np.zeros(self.columns, dtype=np.float32)
        padded_query[: self.dims] = query
        try:
            return _scanned(padded_query, self.packed[:rows], self._scale_zero_of(rows))[:size]
        except RuntimeError:
            logger.exception("4-bit first pass failed; scanning exactly")
            return None

    def _scale_zero_of(self, rows: int) -> Any:
        """The first rows' scales and zeros, contiguous (kept until the next write)."""
        if self._first_rows is None or self._first_rows[0] != rows:
            self._first_rows = (rows, self.scale_zero[:, :rows].contiguous())
        return self._first_rows[1]


def _encoded(vectors: FloatArray) -> tuple[npt.NDArray[np.uint8], Any]:
    """Whole blocks of rows (columns padded to GROUP) as packed codes and the bfloat16
    ``[groups, rows, 2]`` scales and zeros."""
    import torch

    count, columns = vectors.shape
    with torch.inference_mode():
        grouped = torch.from_numpy(vectors).view(count, columns // GROUP, GROUP)
        low, high = torch.aminmax(grouped, dim=2)
        scale = (high - low).clamp_min(1e-12) / _LEVELS
        codes = ((grouped - low[..., None]) / scale[..., None]).round_().clamp_(0, _LEVELS)
        packed = torch._convert_weight_to_int4pack_for_cpu(
            codes.to(torch.int32).view(count, columns), 1
        )
        # The kernel reads a value as (code - 8) * scale + zero.
        pairs = torch.stack([scale.T, (low + 8 * scale).T], dim=-1).to(torch.bfloat16)
        return packed.numpy(), pairs.contiguous()


def _scanned(query: FloatArray, packed: npt.NDArray[np.uint8], scale_zero: Any) -> FloatArray:
    import torch

    with torch.inference_mode():
        out = torch._weight_int4pack_mm_for_cpu(
            torch.from_numpy(query)[None].to(torch.bfloat16),
            torch.from_numpy(packed),
            GROUP,
            scale_zero,
        )
        scores: FloatArray = out[0].float().numpy()
        return scores


@functools.cache
def available() -> bool:
    """Whether torch has the kernel and it agrees with a float32 product here."""
    try:
        rng = np.random.default_rng(0)
        vectors = np.abs(rng.standard_normal((BLOCK, 3 * GROUP))).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        got = _scanned(vectors[1], *_encoded(vectors))
        if not np.allclose(got, vectors @ vectors[1], atol=0.02):
            raise ValueError(f"4-bit kernel disagrees with float32: {got}")
        return True
    except Exception as exc:  # e.g. torch not installed: the exact scan serves
        logger.warning("4-bit first pass unavailable, vector search scans exactly: %s", exc)
        return False
