"""Task configs: packaged YAML defaults, a user YAML file on top, then ``key=value`` overrides.

Every key a user sets must already exist in the task's default config, so a typo is an error
that lists the valid keys instead of a silently ignored setting.
"""

from __future__ import annotations

import copy
import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from cnn_apps.errors import ConfigError


def default_config(task: str) -> dict:
    """The packaged default config of ``task`` (``cnn_apps/configs/<task>.yaml``)."""
    path = resources.files("cnn_apps") / "configs" / f"{task}.yaml"
    if not path.is_file():
        raise ConfigError(f"no default config for task '{task}'")
    return yaml.safe_load(path.read_text()) or {}


def flatten(config: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``. Dict values are expanded, lists kept."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _valid_keys(config: dict) -> list[str]:
    keys = set(flatten(config))
    # Sections themselves may be set as a whole from a YAML file.
    for key in list(keys):
        parts = key.split(".")
        keys.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return sorted(keys)


def _unknown_key(key: str, base: dict, source: str) -> ConfigError:
    valid = _valid_keys(base)
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key '{key}' in {source}.{hint} "
                       f"Valid keys: {', '.join(valid)}")


def _set(config: dict, dotted: str, value: Any, base: dict, source: str) -> None:
    node, base_node = config, base
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(base_node, dict) or part not in base_node \
                or not isinstance(base_node[part], dict):
            raise _unknown_key(dotted, base, source)
        node, base_node = node[part], base_node[part]
    leaf = parts[-1]
    if not isinstance(base_node, dict) or leaf not in base_node:
        raise _unknown_key(dotted, base, source)
    if isinstance(base_node[leaf], dict) and base_node[leaf]:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{dotted}' in {source} is a section; "
                              f"set one of its keys, e.g. {dotted}.{next(iter(base_node[leaf]))}=...")
        for sub_key, sub_value in value.items():
            _set(config, f"{dotted}.{sub_key}", sub_value, base, source)
        return
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"data.path=/x"`` -> ``("data.path", "/x")``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc})") from None
    return key, _number_or_value(value)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _number_or_value(value):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; users mean a number."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def load_config(task: str, config_file: str | Path | None = None,
                overrides: Iterable[str] = ()) -> dict:
    """Resolve a task config: defaults <- ``config_file`` <- ``overrides`` (``key=value``)."""
    base = default_config(task)
    config = copy.deepcopy(base)
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist")
        try:
            user = _numbers_in(yaml.safe_load(path.read_text()) or {})
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
        if not isinstance(user, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of keys to values")
        for key, value in flatten(user).items():
            _set(config, key, value, base, f"config file '{path}'")
    for text in overrides:
        key, value = parse_override(text)
        _set(config, key, value, base, "the command line")
    return config


def _numbers_in(node):
    if isinstance(node, dict):
        return {k: _numbers_in(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_numbers_in(v) for v in node]
    return _number_or_value(node)


def save_config(config: dict, path: str | Path) -> None:
    from cnn_apps.utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
