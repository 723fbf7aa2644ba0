# cython: language_level=3, boundscheck=False, wraparound=False
"""glibc's merge sort (msort_with_tmp) over rows of integer keys, compiled.

ipvsadm sorts virtual and real servers with qsort and comparators that subtract fields
and cut the difference to a C int (ipvs_cmp_services, ipvs_cmp_dests). Such a comparator
is not transitive for addresses 2^31 or more apart, so the order depends on the exact
merge steps: this replays them (split n/2 | n - n/2, take the left row while cmp <= 0).
netfilter/ipvs_text.py owns what the keys are; at 1M services the interpreted sort took
minutes.
"""
from libc.stdint cimport int32_t, int64_t, uint32_t

import numpy as np


cdef inline int _cmp(const int64_t[:, ::1] keys, int64_t a, int64_t b) noexcept nogil:
    cdef Py_ssize_t k
    cdef int32_t r
    for k in range(keys.shape[1]):
        r = <int32_t>(<uint32_t>(keys[a, k] - keys[b, k]))
        if r:
            return r
    return 0


cdef void _msort(const int64_t[:, ::1] keys, int64_t* items, int64_t* tmp,
                 Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t n1, n2, i, j, k
    cdef int64_t* right
    if n <= 1:
        return
    n1 = n // 2
    n2 = n - n1
    right = items + n1
    _msort(keys, items, tmp, n1)
    _msort(keys, right, tmp, n2)
    i = j = k = 0
    while i < n1 and j < n2:
        if _cmp(keys, items[i], right[j]) <= 0:
            tmp[k] = items[i]
            i += 1
        else:
            tmp[k] = right[j]
            j += 1
        k += 1
    while i < n1:
        tmp[k] = items[i]
        i += 1
        k += 1
    # what is left of the right half is in place already
    for i in range(k):
        items[i] = tmp[i]


def glibc_msort(keys):
    """The row order glibc's qsort gives rows of ``keys`` (int64, one row per item, the
    comparator's fields in order, each difference cut to a C int)."""
    cdef const int64_t[:, ::1] k = np.ascontiguousarray(keys, dtype=np.int64)
    cdef Py_ssize_t n = k.shape[0]
    order = np.arange(n, dtype=np.int64)
    tmp = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] o = order
    cdef int64_t[::1] t = tmp
    if n > 1:
        with nogil:
            _msort(k, &o[0], &t[0], n)
    return order
