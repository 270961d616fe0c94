"""Serving signatures built inside the graph (decode + resize + model + post-processing)."""

from __future__ import annotations


def decode_image_batch(image_bytes, height: int, width: int, channels: int):
    """Batch of encoded JPEG/PNG/BMP/GIF bytes -> float32 (N, H, W, C) raw pixels 0..255."""
    import tensorflow as tf

    def decode(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), (height, width), antialias=True)
        return tf.ensure_shape(image, (height, width, channels))

    return tf.map_fn(decode, image_bytes,
                     fn_output_signature=tf.TensorSpec((height, width, channels), tf.float32))


def image_classification_endpoints(model, info: dict) -> dict:
    """``serving_default``: encoded image bytes; ``predict_tensor``: float pixels (N, H, W, C)
    in 0..255. Both return ``probabilities``, top-k ``classes`` (int), ``scores`` and
    ``class_names``."""
    import tensorflow as tf

    height, width, channels = (int(v) for v in info["input_shape"])
    names = tf.constant(info.get("class_names") or [], dtype=tf.string)
    k = int(info.get("top_k", 5))

    def outputs(images):
        out = model(images, training=False)
        probs = tf.cast(out["probabilities"] if isinstance(out, dict) else out, tf.float32)
        top = tf.math.top_k(probs, k=k)
        result = {"probabilities": probs, "classes": top.indices, "scores": top.values}
        if info.get("class_names"):
            result["class_names"] = tf.gather(names, top.indices)
        return result

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(image_bytes):
        return outputs(decode_image_batch(image_bytes, height, width, channels))

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32,
                                                name="images")])
    def serve_tensor(images):
        return outputs(images)

    return {"serving_default": serve_bytes, "predict_tensor": serve_tensor}
