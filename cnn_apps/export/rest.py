"""TF Serving REST predict bodies <-> SavedModel signature calls.

Lets tests (and a small Python server) answer exactly what TF Serving's REST API answers for
``POST /v1/models/<name>:predict``:

* row format ``{"signature_name": ..., "instances": [...]}``: one entry per example; a
  signature with one input takes the bare value, several inputs take ``{name: value}``;
* columnar format ``{"inputs": value}`` or ``{"inputs": {name: batched value}}``;
* bytes travel as ``{"b64": "<base64>"}``; a plain JSON string for a string input is UTF-8.

Responses: row -> ``{"predictions": [...]}`` (per example a ``{output: value}`` dict, or the
bare value when the signature has one output); columnar -> ``{"outputs": {...}}`` (or the bare
batched value). String outputs are UTF-8 text, or ``{"b64": ...}`` when the output name ends in
``_bytes`` (TF Serving's rule). Bad requests give HTTP status 400 and ``{"error": message}``;
the message names the input and the expected dtype/shape.

Example::

    loaded = tf.saved_model.load("exports/digits/1")
    status, body = rest_predict(loaded, {"instances": [{"b64": b64_png}]})
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np

from cnn_apps.errors import CnnAppsError

_AXES = {4: "(N, H, W, C)", 3: "(N, H, W)", 2: "(N, D)", 1: "(N,)"}


def signature_specs(loaded, signature_name: str) -> dict:
    """``{input name: tf.TensorSpec}`` of a loaded SavedModel's signature."""
    if signature_name not in loaded.signatures:
        raise CnnAppsError(f"signature_name '{signature_name}' is not in the model; it has "
                           f"{', '.join(sorted(loaded.signatures))}")
    _, kwargs = loaded.signatures[signature_name].structured_input_signature
    return dict(kwargs)


def describe_spec(name: str, spec) -> str:
    """``images must be float32 (N, H, W, C) with H=32, W=32, C=3``-style expectation."""
    shape = spec.shape.as_list()
    axes = _AXES.get(len(shape), f"of rank {len(shape)}")
    text = f"{name} must be {spec.dtype.name} {axes}"
    if len(shape) == 4:
        text += f" with H={shape[1]}, W={shape[2]}, C={shape[3]}"
    elif len(shape) > 1 and any(d is not None for d in shape[1:]):
        text += f" with per-example shape {tuple(shape[1:])}"
    return text


def _decode_bytes(value, name):
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise CnnAppsError(f"{name}: a bytes value must be {{\"b64\": \"...\"}}, got keys "
                               f"{sorted(value)}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError) as exc:
            raise CnnAppsError(f"{name}: 'b64' is not valid base64 ({exc})") from exc
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list):
        return [_decode_bytes(v, name) for v in value]
    raise CnnAppsError(f"{name}: expected a string or {{\"b64\": ...}}, "
                       f"got {type(value).__name__}")


def _contains_b64(value) -> bool:
    if isinstance(value, dict):
        return "b64" in value
    return isinstance(value, list) and any(_contains_b64(v) for v in value)


def to_array(name: str, value, spec) -> np.ndarray:
    """A JSON value (batched) -> numpy array checked against ``spec`` (dtype, rank, dims)."""
    import tensorflow as tf

    shape = spec.shape.as_list()
    expect = describe_spec(name, spec)
    if spec.dtype == tf.string:
        array = np.array(_decode_bytes(value, name), dtype=object)
        if array.ndim == 0 and len(shape) >= 1 and value == []:
            array = np.zeros((0,), dtype=object)
    else:
        if _contains_b64(value):
            raise CnnAppsError(f"{expect}; got base64 bytes")
        if isinstance(value, list) and len(value) == 0:
            if any(d is None for d in shape[1:]):
                raise CnnAppsError(f"{expect}; an empty batch needs a fixed per-example shape")
            return np.zeros((0, *shape[1:]), dtype=spec.dtype.as_numpy_dtype)
        try:
            raw = np.array(value)
        except ValueError as exc:        # ragged nested lists
            raise CnnAppsError(f"{expect}; got ragged nested lists ({exc})") from exc
        if raw.dtype.kind not in "biuf":
            raise CnnAppsError(f"{expect}; got values of type {raw.dtype.name} "
                               "(ragged lists, strings or nulls)")
        if spec.dtype.is_integer and raw.dtype.kind == "f" and not np.all(
                np.isfinite(raw) & (raw == np.round(raw))):
            raise CnnAppsError(f"{expect}; got non-integer numbers")
        array = raw.astype(spec.dtype.as_numpy_dtype)
    if array.ndim != len(shape) or any(s is not None and s != d
                                       for s, d in zip(shape, array.shape)):
        raise CnnAppsError(f"{expect}; got shape {tuple(array.shape)}")
    return array


def request_to_inputs(body, specs: dict) -> tuple[dict, bool]:
    """``({input name: array}, row_format)`` from a REST predict body (dict or JSON text)."""
    if isinstance(body, (str, bytes)):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as exc:
            raise CnnAppsError(f"request body is not JSON ({exc})") from exc
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise CnnAppsError("request body must be a JSON object with exactly one of "
                           "'instances' (row format) or 'inputs' (columnar format)")
    names = sorted(specs)
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise CnnAppsError("'instances' must be a list (one entry per example)")
        if len(names) == 1 and not (rows and isinstance(rows[0], dict) and names[0] in rows[0]):
            columns = {names[0]: rows}
        else:
            for i, row in enumerate(rows):
                if not isinstance(row, dict) or set(row) != set(names):
                    got = sorted(row) if isinstance(row, dict) else type(row).__name__
                    raise CnnAppsError(f"instances[{i}] must be an object with keys "
                                       f"{names}, got {got}")
            columns = {name: [row[name] for row in rows] for name in names}
        row_format = True
    else:
        columns = body["inputs"]
        if not (isinstance(columns, dict) and set(columns) == set(names)):
            if len(names) != 1:
                raise CnnAppsError(f"'inputs' must be an object with keys {names}")
            columns = {names[0]: columns}
        row_format = False
    arrays = {name: to_array(name, columns[name], specs[name]) for name in names}
    sizes = {len(a) for a in arrays.values()}
    if len(sizes) > 1:
        raise CnnAppsError(f"inputs have different batch sizes: "
                           f"{ {k: len(v) for k, v in arrays.items()} }")
    return arrays, row_format


def _jsonable(name: str, array: np.ndarray):
    if array.dtype == object or array.dtype.kind == "S":
        def convert(item):
            if name.endswith("_bytes"):
                return {"b64": base64.b64encode(item).decode("ascii")}
            return item.decode("utf-8", errors="replace")
        return np.vectorize(convert, otypes=[object])(array).tolist() if array.size else \
            array.tolist()
    return array.tolist()


def outputs_to_response(outputs: dict, row_format: bool) -> dict:
    """A REST predict response body from ``{output name: numpy array}``."""
    names = sorted(outputs)
    values = {name: _jsonable(name, np.asarray(outputs[name])) for name in names}
    if not row_format:
        return {"outputs": values[names[0]] if len(names) == 1 else values}
    count = len(next(iter(values.values()))) if values else 0
    if len(names) == 1:
        return {"predictions": values[names[0]]}
    return {"predictions": [{name: values[name][i] for name in names} for i in range(count)]}


def rest_predict(loaded, body) -> tuple[int, dict]:
    """``(HTTP status, response body)`` of a REST predict request against a loaded
    SavedModel: 200 with predictions, or 400 with ``{"error": message}``."""
    import tensorflow as tf

    try:
        parsed = json.loads(body) if isinstance(body, (str, bytes)) else body
        name = (parsed.get("signature_name") if isinstance(parsed, dict) else None) \
            or "serving_default"
        specs = signature_specs(loaded, name)
        arrays, row_format = request_to_inputs(parsed, specs)
        outputs = loaded.signatures[name](**{k: tf.constant(v, dtype=specs[k].dtype)
                                             for k, v in arrays.items()})
    except (CnnAppsError, json.JSONDecodeError) as exc:
        return 400, {"error": str(exc)}
    except tf.errors.InvalidArgumentError as exc:
        return 400, {"error": exc.message}
    return 200, outputs_to_response({k: v.numpy() for k, v in outputs.items()}, row_format)
