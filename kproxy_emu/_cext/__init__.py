"""Compiled Cython modules, built from ../../cext/*.pyx.

There is deliberately no pure-Python fallback here: if the extension did not build,
importing kproxy_emu fails loudly (CI relies on that).
"""
