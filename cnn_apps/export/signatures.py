"""Serving signatures built inside the graph (validate + decode + resize + model + post-process).

Every check runs in the graph, so TF Serving, ``saved_model_cli`` and a loaded SavedModel all
answer bad input with an ``InvalidArgumentError`` whose message says what is wrong:

* ``image_bytes``: JPEG or PNG only. Each element is checked *before* decoding: encoded size
  ``<= max_bytes`` (default :data:`MAX_IMAGE_BYTES`, 16 MiB), a JPEG/PNG signature, an end
  marker (JPEG ``FFD9`` / PNG ``IEND`` chunk; a missing one means a truncated upload), and the
  width x height read from the header ``<= max_pixels`` (default :data:`MAX_IMAGE_PIXELS`,
  4096 x 4096), so an oversized image never reaches the decoder. Corruption inside the
  compressed data is reported by TensorFlow's decoder (also an ``InvalidArgumentError``).
* ``images`` (float pixels): the signature refuses another dtype; the shape (N, H, W, C) and
  finiteness are asserted in-graph (``images must be float32 (N, H, W, C) with H=32, W=32,
  C=3; got shape ...``, ``images contain NaN or Inf``): see :func:`check_image_tensor`.
* An empty batch (0 images) is valid and returns empty outputs (0 rows, the usual trailing
  shape), see :func:`guarded_model_call`.
"""

from __future__ import annotations

#: largest encoded image accepted by an ``image_bytes`` signature (bytes).
MAX_IMAGE_BYTES = 16 * 1024 * 1024
#: largest decoded image accepted by an ``image_bytes`` signature (width x height).
MAX_IMAGE_PIXELS = 4096 * 4096

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"          # the IEND chunk type + its fixed CRC


def _image_size_from_header(data, is_png):
    """``(height, width)`` int64 from a PNG IHDR chunk or a JPEG SOF marker (no decoding)."""
    import tensorflow as tf

    def png_size():
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 16, 8), tf.uint8), tf.int64)
        width = raw[0] * 2 ** 24 + raw[1] * 2 ** 16 + raw[2] * 2 ** 8 + raw[3]
        height = raw[4] * 2 ** 24 + raw[5] * 2 ** 16 + raw[6] * 2 ** 8 + raw[7]
        return tf.stack([height, width])

    def jpeg_size():
        return tf.cast(tf.io.extract_jpeg_shape(data)[:2], tf.int64)

    return tf.cond(is_png, png_size, jpeg_size)


def validate_encoded_image(data, index, max_bytes: int = MAX_IMAGE_BYTES,
                           max_pixels: int = MAX_IMAGE_PIXELS):
    """Assert ops (in order) that ``data`` (scalar string) is a complete JPEG/PNG of bounded
    size; ``index`` names the batch element in the messages."""
    import tensorflow as tf

    length = tf.strings.length(data)
    where = tf.strings.format("image_bytes[{}]", index)
    size_ok = tf.debugging.Assert(
        length <= max_bytes,
        [tf.strings.join([where, tf.strings.format(
            " has {} bytes; at most {} bytes are accepted", (length, max_bytes))])])
    with tf.control_dependencies([size_ok]):
        is_png = tf.equal(tf.strings.substr(data, 0, 8), _PNG_MAGIC)
        is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff")
        format_ok = tf.debugging.Assert(
            # A PNG needs its 8-byte signature + 25-byte IHDR chunk before anything else.
            tf.logical_or(tf.logical_and(is_png, length >= 45),
                          tf.logical_and(is_jpeg, length >= 12)),
            [tf.strings.join([where, " is not a decodable JPEG/PNG image (no JPEG or PNG "
                                     "signature)"])])
    with tf.control_dependencies([format_ok]):
        tail = tf.strings.substr(data, tf.maximum(length - 8, 0), 8)
        # A JPEG may carry a few padding bytes after its EOI marker; look at the last 8.
        tail_bytes = tf.io.decode_raw(tail, tf.uint8)
        jpeg_end = tf.reduce_any(tf.logical_and(tf.equal(tail_bytes[:-1], 0xFF),
                                                tf.equal(tail_bytes[1:], 0xD9)))
        complete = tf.where(is_png, tf.equal(tail, _PNG_END), jpeg_end)
        complete_ok = tf.debugging.Assert(
            complete, [tf.strings.join([where, " is not a decodable JPEG/PNG image "
                                               "(truncated: no end marker)"])])
    with tf.control_dependencies([complete_ok]):
        size = _image_size_from_header(data, is_png)
        pixels = size[0] * size[1]
        pixels_ok = tf.debugging.Assert(
            tf.logical_and(pixels <= max_pixels, pixels > 0),
            [tf.strings.join([where, tf.strings.format(
                " is {}x{} pixels; at most {} pixels (width x height) are accepted",
                (size[1], size[0], max_pixels))])])
    return pixels_ok


def decode_image_batch(image_bytes, height: int, width: int, channels: int,
                       max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS):
    """Batch of encoded JPEG/PNG bytes -> float32 (N, H, W, C) raw pixels 0..255, each image
    validated first (see the module doc); resized with antialiasing to (height, width)."""
    import tensorflow as tf

    indices = tf.range(tf.shape(image_bytes, out_type=tf.int64)[0])

    def decode(item):
        data, index = item
        with tf.control_dependencies([validate_encoded_image(data, index, max_bytes,
                                                             max_pixels)]):
            image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), (height, width), antialias=True)
        return tf.ensure_shape(image, (height, width, channels))

    return tf.map_fn(decode, (image_bytes, indices),
                     fn_output_signature=tf.TensorSpec((height, width, channels), tf.float32))


def check_image_tensor(images, height: int, width: int, channels: int):
    """``images`` as a checked float (N, H, W, C) tensor: shape and finiteness asserted at run
    time.

    A loaded signature checks only the dtype of its input, not its shape, and a wrong-rank
    tensor reaching a convolution aborts the whole process (a oneDNN check failure). Rank checks
    written with ``tf.rank`` are constant-folded from the static signature shape, so the message
    check uses the run-time H, W, C and element count N*H*W*C, and ``tf.ensure_shape`` (checked
    at run time) guarantees the rank.
    """
    import tensorflow as tf

    shape = tf.shape(images)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], 0)   # rank < 4 still indexes
    expected = tf.constant([height, width, channels], tf.int32)
    ok = tf.logical_and(tf.reduce_all(tf.equal(padded[1:4], expected)),
                        tf.equal(tf.size(images), padded[0] * height * width * channels))
    shape_ok = tf.debugging.Assert(
        ok, [f"images must be float32 (N, H, W, C) with H={height}, W={width}, C={channels}; "
             "got shape", shape])
    with tf.control_dependencies([shape_ok]):
        # EnsureShape is checked at run time (and not optimised away): the hard guarantee.
        images = tf.ensure_shape(images, [None, height, width, channels])
    return tf.debugging.assert_all_finite(images, "images contain NaN or Inf")


def check_string_vector(values, name: str = "image_bytes"):
    """``values`` as a checked rank-1 string tensor (run-time checks as above)."""
    import tensorflow as tf

    shape = tf.shape(values)
    first = tf.concat([shape, [0]], 0)[0]
    shape_ok = tf.debugging.Assert(tf.equal(tf.size(values), first),
                                   [f"{name} must be a 1-D string tensor (N,); got shape", shape])
    with tf.control_dependencies([shape_ok]):
        return tf.ensure_shape(values, [None])


def guarded_model_call(fn, images):
    """``fn(images)`` (a dict of batched tensors) that also answers an empty batch: oneDNN
    kernels reject 0-row matrices, so an empty batch runs on one zero image and the outputs
    are cut back to 0 rows."""
    import tensorflow as tf

    count = tf.shape(images)[0]
    one_zero = tf.zeros(tf.concat([[1], tf.shape(images)[1:]], 0), images.dtype)
    batch = tf.cond(count > 0, lambda: images, lambda: one_zero)
    return {name: value[:count] for name, value in fn(batch).items()}


def image_classification_endpoints(model, info: dict) -> dict:
    """``serving_default``: encoded image bytes; ``predict_tensor``: float pixels (N, H, W, C)
    in 0..255. Both return ``probabilities``, top-k ``classes`` (int), ``scores`` and
    ``class_names``. ``info`` may set ``max_image_bytes`` / ``max_image_pixels``."""
    import tensorflow as tf

    height, width, channels = (int(v) for v in info["input_shape"])
    names = tf.constant(info.get("class_names") or [], dtype=tf.string)
    k = int(info.get("top_k", 5))
    limits = {"max_bytes": int(info.get("max_image_bytes", MAX_IMAGE_BYTES)),
              "max_pixels": int(info.get("max_image_pixels", MAX_IMAGE_PIXELS))}

    def predict(images):
        out = model(images, training=False)
        probs = tf.cast(out["probabilities"] if isinstance(out, dict) else out, tf.float32)
        top = tf.math.top_k(probs, k=k)
        result = {"probabilities": probs, "classes": top.indices, "scores": top.values}
        if info.get("class_names"):
            result["class_names"] = tf.gather(names, top.indices)
        return result

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(image_bytes):
        images = decode_image_batch(check_string_vector(image_bytes), height, width, channels,
                                    **limits)
        return guarded_model_call(predict, images)

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32,
                                                name="images")])
    def serve_tensor(images):
        return guarded_model_call(predict, check_image_tensor(images, height, width, channels))

    return {"serving_default": serve_bytes, "predict_tensor": serve_tensor}
