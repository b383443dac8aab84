"""Reading released pickles (AVA's proposal files) without running anything they name. Torch-free.

A pickle can call any importable function while it loads (`os.system` through `__reduce__`), so a
downloaded `.pkl` is never given to `pickle.load`. `load_numpy_pickle` admits plain containers, numbers
and strings (pickle opcodes, no globals) and the few globals that numpy arrays, dtypes and scalars
pickle to, under numpy 1's and numpy 2's module paths alike; any other global is refused before it is
looked up, so nothing it names is imported or called.
"""

from __future__ import annotations

import codecs
import importlib
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import first_line


class PickleRejected(ValueError):
    """A pickle that names a global outside the allowed few, or that does not parse: one line."""


def _numpy_internal(submodule: str, name: str) -> Callable[[], Any]:
    """A lookup of numpy's pickle helper `name`: in `numpy._core` from numpy 2, `numpy.core` before.

    Either path may be in a file (the pickling numpy's), so both resolve to the installed numpy's helper;
    the new path first, as importing `numpy.core` warns under numpy 2.
    """

    def resolve() -> Any:
        for package in ("numpy._core", "numpy.core"):
            try:
                return getattr(importlib.import_module(f"{package}.{submodule}"), name)
            except (ImportError, AttributeError):
                continue
        raise PickleRejected(f"numpy has no {submodule}.{name} to rebuild an array with")

    return resolve


_RECONSTRUCT = _numpy_internal("multiarray", "_reconstruct")  # ndarray.__reduce__, protocols 0-4
_SCALAR = _numpy_internal("multiarray", "scalar")  # numpy scalars (np.float64(0.5))
_FROMBUFFER = _numpy_internal("numeric", "_frombuffer")  # ndarray.__reduce_ex__, protocol 5

# (module, name) as a pickle spells it -> how to get the object. Nothing else is ever imported.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    # Protocol 2 written by Python 3 stores bytes (an array's data) as `_codecs.encode(text, "latin1")`,
    # and empty bytes as `bytes()` (`__builtin__` in the pickle, `builtins` in Python 3's own).
    ("_codecs", "encode"): lambda: codecs.encode,
    ("builtins", "bytes"): lambda: bytes,
    ("__builtin__", "bytes"): lambda: bytes,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose globals are `ALLOWED_GLOBALS` only: numpy arrays, dtypes and scalars."""

    def find_class(self, module: str, name: str) -> Any:
        resolve = ALLOWED_GLOBALS.get((module, name))
        if resolve is None:
            raise PickleRejected(
                f"refused global {module}.{name} (only numpy arrays and plain containers load)"
            )
        return resolve()


def load_numpy_pickle(path: Path | str) -> Any:
    """The object pickled in `path`, if it holds only plain containers, numbers, strings and numpy arrays.

    `PickleRejected` (one line naming the file) for any other global, before it is looked up, and for a
    file that does not unpickle. `encoding="latin1"` reads numpy arrays pickled by Python 2 as well.
    """
    try:
        with open(path, "rb") as handle:
            return NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except PickleRejected as error:
        raise PickleRejected(f"{path}: {error}") from None
    except OSError as error:
        raise PickleRejected(f"{path}: cannot be read ({error.strerror or first_line(error)})") from None
    except Exception as error:  # a damaged pickle fails in many ways (EOFError, KeyError of the memo, ...)
        raise PickleRejected(f"{path}: not a readable pickle ({first_line(error)})") from None
