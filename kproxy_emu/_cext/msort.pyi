"""Stub for the compiled kproxy_emu._cext.msort (source: cext/msort.pyx)."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

def glibc_msort(keys: npt.ArrayLike | Sequence[Sequence[int]]) -> npt.NDArray[np.int64]:
    """The row order glibc's qsort gives rows of ``keys`` (int64, one row per item, the
    comparator's fields in order, each difference cut to a C int)."""
