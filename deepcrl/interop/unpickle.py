"""Reading the reference's pickles without running arbitrary code: an Unpickler with an allow-list.

`pickle.load` imports and calls whatever a file names, so a hostile ``final.pkl`` could run any code. This
Unpickler resolves only the globals the reference's files use (numpy's array and scalar rebuilders, numpy
dtypes, flax's FrozenDict, jax's array rebuilder and the ``Args`` dataclass pickled from the training
script's ``__main__``) and maps each onto a harmless local stand-in; any other global is refused with one
sentence. Arrays come back as numpy arrays (jax is never asked to rebuild anything).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from deepcrl.errors import DeepcrlError

try:  # numpy 2 moved the module; files written under numpy 1.x name the old one
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
    from numpy.core.multiarray import scalar as _np_scalar


class ReferenceArgs:
    """Stand-in for the reference's ``Args`` dataclass: unpickling fills its ``__dict__`` with the fields."""

    def fields(self) -> dict[str, Any]:
        """The pickled fields that are plain numbers, strings or booleans (numpy scalars made Python ones)."""
        out = {}
        for key, value in vars(self).items():
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, (bool, int, float, str)) or value is None:
                out[key] = value
        return out


def _jax_array(fun, args, arr_state, aval_state=None) -> np.ndarray:
    """jax's ``_reconstruct_array``, minus jax: rebuild the numpy array it wraps (fun is numpy's rebuilder)."""
    if fun is not _np_reconstruct:
        raise DeepcrlError("a pickled jax array names an unexpected rebuilder.")
    array = fun(*args)
    array.__setstate__(arr_state)
    return np.asarray(array)


def _frozen_dict(*args, **kwargs) -> dict:
    """flax's FrozenDict pickles as ``FrozenDict(dict)``: a plain dict is all the importer needs."""
    return dict(*args, **kwargs)


ALLOWED: dict[tuple[str, str], Any] = {
    ("jax._src.array", "_reconstruct_array"): _jax_array,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("flax.core.frozen_dict", "FrozenDict"): _frozen_dict,
    ("__main__", "Args"): ReferenceArgs,
    ("train", "Args"): ReferenceArgs,
}
# numpy >= 1.25 pickles dtypes as their classes (numpy.dtypes.Float32DType): those are data too
ALLOWED.update({("numpy.dtypes", name): getattr(np.dtypes, name) for name in dir(np.dtypes)
                if name.endswith("DType")} if hasattr(np, "dtypes") else {})


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in `allowed` (default `ALLOWED`); anything else raises `DeepcrlError`."""

    allowed: dict[tuple[str, str], Any] = ALLOWED
    source: str = "scaling-crl"

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise DeepcrlError(f"refusing to unpickle {module}.{name}: only the reference's arrays, dicts and "
                               f"Args are allowed (a file naming other code is not a {self.source} checkpoint)."
                               ) from None


def load(path: Path, what: str, allowed: dict[tuple[str, str], Any] | None = None,
         source: str = "scaling-crl") -> Any:
    """Unpickle a file with `RestrictedUnpickler`; any failure is one `DeepcrlError` sentence naming `what`.

    ``allowed`` replaces the allow-list (`ALLOWED` by default); ``source`` names the format in the refusal.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DeepcrlError(f"cannot read the {what} {path}: {exc.strerror}.") from exc
    try:
        unpickler = RestrictedUnpickler(io.BytesIO(data))
        if allowed is not None:
            unpickler.allowed = allowed
        unpickler.source = source
        return unpickler.load()
    except DeepcrlError:
        raise
    except Exception as exc:  # a truncated or foreign file raises many types (UnpicklingError, EOFError, ...)
        raise DeepcrlError(f"the {what} {path} is corrupt or not a pickle ({type(exc).__name__}).") from exc
