"""On-disk cache of generated data sets: one ``.npz`` file per configuration.

The file name holds the generator's name and a hash of its full configuration
(including the generator's version), so a changed knob never reads stale data.
The directory is ``cache_dir`` when given, else ``$BILEVEL_MTL_CACHE``, else
``~/.cache/bilevel_mtl``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "BILEVEL_MTL_CACHE"

Arrays = dict[str, np.ndarray]


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$BILEVEL_MTL_CACHE``, else ``~/.cache/bilevel_mtl``."""
    if cache_dir is not None:
        return Path(cache_dir)
    from_env = os.environ.get(CACHE_ENV)
    if from_env:
        return Path(from_env)
    return Path.home() / ".cache" / "bilevel_mtl"


def config_hash(config: Mapping[str, Any]) -> str:
    """A short, stable hash of a JSON-serialisable configuration (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(name: str, config: Mapping[str, Any], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the arrays of generator ``name`` under ``config`` are stored."""
    return cache_root(cache_dir) / f"{name}-{config_hash(config)}.npz"


def cached_arrays(
    name: str,
    config: Mapping[str, Any],
    build: Callable[[], Arrays],
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> Arrays:
    """Load the arrays for ``config`` from the cache, or ``build()`` them and store them.

    The write goes to a temporary file renamed into place, so an interrupted run
    never leaves a truncated cache entry. ``use_cache=False`` builds without
    reading or writing anything.
    """
    if not use_cache:
        return build()
    path = cache_path(name, config, cache_dir)
    if path.exists():
        with np.load(path, allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp.npz")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, allow_pickle=False, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return arrays
