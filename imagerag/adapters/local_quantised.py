"""int8 copies of the vector cache's unit rows, for a fast first pass over large indexes.

An exact float32 scan reads 4 bytes per dimension per row (512 MB per query at 100,000
1280-d rows, ~25 ms on 2 cores, memory-bound). The int8 copy is a quarter of that: one byte
per dimension plus one scale per row, scanned by torch's int8 weight x bfloat16 kernel
(``torch._weight_int8pack_mm``, the kernel behind int8 weight-only LLM inference on CPU; no
repacking, so rows are overwritten in place). The approximate scores only choose candidates;
the cache scores those exactly from the float32 rows (bench/ann.py: recall@10 1.0 with 100
candidates at 100,000 rows, where bfloat16's own rounding is ~0.004).

The kernel is a private torch op: given rows whose length is not a multiple of 16 in a
matrix whose row count is not a multiple of 4, torch 2.13's kernel crashed the process
(segmentation fault). So both are padded here (zero columns, spare rows), the shapes it was
checked with. Where torch or the kernel is missing the first pass is off and the cache scans
exactly."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

Int8Matrix = npt.NDArray[np.int8]
FloatArray = npt.NDArray[np.float32]
Kernel = Callable[[FloatArray, Int8Matrix, FloatArray], FloatArray]

_COLUMNS_MULTIPLE = 16
_ROWS_MULTIPLE = 4


def _padded(count: int, multiple: int) -> int:
    return -(-count // multiple) * multiple


class QuantisedRows:
    """Row ``i`` holds round(row / scale[i]) with scale[i] = max|row| / 127."""

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self.columns = _padded(dims, _COLUMNS_MULTIPLE)
        self.rows: Int8Matrix = np.zeros((0, self.columns), dtype=np.int8)
        self.scales: FloatArray = np.zeros(0, dtype=np.float32)

    def grow(self, capacity: int, keep: int) -> None:
        """Room for ``capacity`` rows, keeping the first ``keep``."""
        capacity = _padded(capacity, _ROWS_MULTIPLE)
        rows = np.zeros((capacity, self.columns), dtype=np.int8)
        rows[:keep] = self.rows[:keep]
        scales = np.zeros(capacity, dtype=np.float32)
        scales[:keep] = self.scales[:keep]
        self.rows, self.scales = rows, scales

    def set(self, slots: npt.NDArray[np.intp], vectors: FloatArray) -> None:
        peaks = np.abs(vectors).max(axis=1) if vectors.size else np.zeros(0, np.float32)
        scales = np.where(peaks > 0, peaks / 127.0, 1.0).astype(np.float32)
        self.rows[slots, : self.dims] = np.rint(vectors / scales[:, None]).astype(np.int8)
        self.scales[slots] = scales

    def scores(self, query: FloatArray, size: int) -> FloatArray | None:
        """Approximate cosines of the first ``size`` rows with the unit ``query``; None when
        the kernel is unavailable (the caller scans exactly)."""
        kernel = _kernel()
        if kernel is None:
            return None
        padded_query = np.zeros(self.columns, dtype=np.float32)
        padded_query[: self.dims] = query
        rows = _padded(size, _ROWS_MULTIPLE)  # within capacity: grow() pads it too
        try:
            return kernel(padded_query, self.rows[:rows], self.scales[:rows])[:size]
        except RuntimeError:
            logger.exception("int8 first pass failed; scanning exactly")
            return None


def _int8_scores(query: FloatArray, rows: Int8Matrix, scales: FloatArray) -> FloatArray:
    import torch

    bf16 = torch.bfloat16
    with torch.inference_mode():
        out = torch._weight_int8pack_mm(
            torch.from_numpy(query)[None].to(bf16),
            torch.from_numpy(rows),
            torch.from_numpy(scales).to(bf16),
        )
        scores: FloatArray = out[0].float().numpy()
        return scores


@functools.cache
def _kernel() -> Kernel | None:
    """The kernel if torch has it and it agrees with a float32 product, else None."""
    try:
        import torch

        if not hasattr(torch, "_weight_int8pack_mm"):
            raise AttributeError("torch has no _weight_int8pack_mm")
        vectors = np.zeros((_ROWS_MULTIPLE, _COLUMNS_MULTIPLE), np.float32)
        vectors[:, :2] = np.array([[1, 0], [0.6, 0.8], [0, 1], [0.8, -0.6]])
        probe = QuantisedRows(_COLUMNS_MULTIPLE)
        probe.grow(_ROWS_MULTIPLE, keep=0)
        probe.set(np.arange(_ROWS_MULTIPLE), vectors)
        got = _int8_scores(vectors[1], probe.rows, probe.scales)
        if not np.allclose(got, vectors @ vectors[1], atol=0.02):
            raise ValueError(f"int8 kernel disagrees with float32: {got}")
        return _int8_scores
    except Exception as exc:  # e.g. torch not installed: the exact scan serves
        logger.warning("int8 first pass unavailable, vector search scans exactly: %s", exc)
        return None
