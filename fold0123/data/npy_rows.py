"""An [n, ...] .npy array written into an open file a batch of rows at a time, for outputs too large to hold
whole: the evaluator's eval npz members (engine.evaluator.NpzStream) and the ensemble's test probabilities
(`ensemble.probabilities: npy`). The header goes out with the first batch, which gives the other dimensions."""
from __future__ import annotations

import numpy as np


class NpyRows:
    def __init__(self, file, dtype: str):
        self.file, self.dtype, self.written = file, np.dtype(dtype), 0

    def __call__(self, rows: np.ndarray, n: int) -> None:
        """Append `rows` of an array of `n` rows in all."""
        if self.written == 0:
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (n, *rows.shape[1:])}
            np.lib.format.write_array_header_2_0(self.file, header)
        self.file.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.written += len(rows)
