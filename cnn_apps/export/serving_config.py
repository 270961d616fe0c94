"""TF Serving ``models.config`` (``ModelServerConfig`` text proto) for a set of exports.

Each export base folder (``<base>/<version>/saved_model.pb``) becomes one ``model_config_list``
entry: ``name`` (the folder's name unless given), absolute ``base_path``, platform
``tensorflow`` and a version policy: ``latest`` (the newest N versions, default 1), ``all``, or
``specific`` (listed versions, each must exist). Serve it with
``tensorflow_model_server --model_config_file=models.config``.

Example::

    text = serving_config_text(["exports/digits", "exports/faces"], policy="latest")
    write_serving_config(["exports/digits"], "models.config")
"""

from __future__ import annotations

import re
from pathlib import Path

from cnn_apps.errors import CnnAppsError
from cnn_apps.utils.io import atomic_write_text

POLICIES = ("latest", "all", "specific")


def export_versions(base_dir) -> list[int]:
    """Sorted integer versions under ``base_dir`` that hold a ``saved_model.pb``."""
    base_dir = Path(base_dir)
    return sorted(int(p.name) for p in base_dir.iterdir()
                  if p.is_dir() and re.fullmatch(r"\d+", p.name)
                  and (p / "saved_model.pb").is_file()) if base_dir.is_dir() else []


def serving_config(export_dirs, names=None, policy: str = "latest", num_versions: int = 1,
                   versions=None):
    """The ``ModelServerConfig`` proto; arguments as in the module doc."""
    from tensorflow_serving.config import model_server_config_pb2

    if policy not in POLICIES:
        raise CnnAppsError(f"policy must be one of {', '.join(POLICIES)}, got '{policy}'")
    if policy == "latest" and int(num_versions) < 1:
        raise CnnAppsError(f"num_versions must be >= 1, got {num_versions}")
    if policy == "specific" and not versions:
        raise CnnAppsError("policy 'specific' needs versions (e.g. --versions 1 2)")
    export_dirs = [Path(d) for d in export_dirs]
    if not export_dirs:
        raise CnnAppsError("give at least one export folder")
    names = list(names) if names else [d.resolve().name for d in export_dirs]
    if len(names) != len(export_dirs):
        raise CnnAppsError(f"{len(names)} names for {len(export_dirs)} export folders")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CnnAppsError(f"model names must be unique, got {duplicates} more than once "
                           "(name them with --names)")
    config = model_server_config_pb2.ModelServerConfig()
    for name, base in zip(names, export_dirs):
        found = export_versions(base)
        if not found:
            hint = (" (this is a version folder: pass its parent)"
                    if (base / "saved_model.pb").is_file() else "")
            raise CnnAppsError(f"'{base}' is not an export base folder: no <version>/"
                               f"saved_model.pb under it{hint}")
        entry = config.model_config_list.config.add()
        entry.name, entry.base_path = name, str(base.resolve())
        entry.model_platform = "tensorflow"
        if policy == "latest":
            entry.model_version_policy.latest.num_versions = int(num_versions)
        elif policy == "all":
            entry.model_version_policy.all.SetInParent()
        else:
            missing = sorted(set(int(v) for v in versions) - set(found))
            if missing:
                raise CnnAppsError(f"'{base}' has no version(s) {missing}; it has {found}")
            entry.model_version_policy.specific.versions.extend(sorted(int(v) for v in versions))
    return config


def serving_config_text(export_dirs, **kwargs) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(serving_config(export_dirs, **kwargs))


def write_serving_config(export_dirs, path, **kwargs) -> Path:
    """Write ``models.config`` atomically; returns its path."""
    path = Path(path)
    atomic_write_text(path, serving_config_text(export_dirs, **kwargs))
    return path
