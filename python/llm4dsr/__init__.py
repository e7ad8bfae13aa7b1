"""llm4dsr: denoising sequential recommendation with a fine-tuned language model.

The classes come from the C++ extension ``llm4dsr._llm4dsr``; every library error is raised as
:class:`llm4dsr.Error`.
"""
from __future__ import annotations

import os as _os

# The extension links libtorch from the installed torch package: load it first.
import torch as _torch  # noqa: F401

from ._llm4dsr import *  # noqa: F401,F403
from ._llm4dsr import Error, __version__, default_freed_memory_retention, set_freed_memory_retention, set_num_threads

#: Folder to put on CMAKE_PREFIX_PATH for ``find_package(llm4dsr)`` against this installation.
cmake_prefix_path = _os.path.join(_os.path.dirname(__file__), "share", "cmake")

# libtorch's intra-op threads: all cores unless LLM4DSR_NUM_THREADS says otherwise.
set_num_threads(0)

# Freed activations stay in the heap for the next layer instead of being page-faulted in again
# (LLM4DSR_RETAIN_FREED_MEMORY=0 turns this off; see set_freed_memory_retention).
set_freed_memory_retention(default_freed_memory_retention())
