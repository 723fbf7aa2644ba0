"""Builds the Cython core: every cext/<name>.pyx becomes kproxy_emu._cext.<name>.

Directives are set once here for the whole build. KPROXY_EMU_DEBUG=1 turns bounds
checking and wraparound back on (a debug build for chasing memory errors).
"""

import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("KPROXY_EMU_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

extensions = [
    Extension(
        f"kproxy_emu._cext.{os.path.splitext(os.path.basename(path))[0]}",
        [path],
        include_dirs=[numpy.get_include(), "cext", "."],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    )
    for path in sorted(glob.glob("cext/*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        include_path=["cext", "."],
        annotate=False,
    )
)
