"""The detection ``Task``: SSD, YOLO v1 / v3 and the R-CNN family on the shapes / COCO / VOC data,
COCO AP through pycocotools, structured predictions and TF OD API style serving
(survey S0 §5.2).

``cnn-apps train detection model=ssd`` (or ``model=yolo|yolo_v3|faster_rcnn|fast_rcnn|sppnet|
rcnn``, ``backbone=<any registered>``).
The split called ``test`` by the training core is the dataset's ``val`` split (the shapes
dataset, COCO and VOC ship train/val only).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from cnn_apps.applications.base import Task
from cnn_apps.applications.detection.common import OUTPUT_KEYS, postprocess_config
from cnn_apps.applications.detection.data import (load_detection_records, make_detection_dataset,
                                                  records_to_arrays)
from cnn_apps.applications.detection.detectors import get_detector


class DetectionData(NamedTuple):
    train_records: list
    val_records: list
    categories: list
    x_train: np.ndarray
    gt_train: np.ndarray
    x_val: np.ndarray
    gt_val: np.ndarray

    @property
    def class_names(self):
        return [c["name"] for c in self.categories]


class DetectionTask(Task):
    name = "detection"
    description = ("SSD, YOLO v1/v3, Faster/Fast R-CNN, SPP-net and R-CNN on any backbone; "
                   "COCO AP")
    monitor = ("val_loss", "min")

    def __init__(self):
        self._cache = {}
        self._info_cache = {}
        self._proposal_cache = {}

    # -- data -------------------------------------------------------------------------------
    def data(self, config):
        """Loaded, resized splits (cached per data config and image size)."""
        data_cfg = config["data"]
        key = repr((sorted(data_cfg.items()), config["image_size"]))
        if key not in self._cache:
            train = load_detection_records(data_cfg, "train")
            val = load_detection_records(data_cfg, "val")
            size, max_boxes = int(config["image_size"]), int(data_cfg.get("max_boxes", 20))
            limit = data_cfg.get("max_images")
            x_train, gt_train = records_to_arrays(train.records, size, max_boxes, limit)
            x_val, gt_val = records_to_arrays(val.records, size, max_boxes, limit)
            val_records = val.records[:limit] if limit else val.records
            self._cache = {key: DetectionData(train.records, val_records, train.categories,
                                              x_train, gt_train, x_val, gt_val)}
        return self._cache[key]

    def proposals(self, config, split):
        """Region proposals (N, R, 4) of the ``train`` or ``val`` split for detectors that
        take them (``Detector.needs_proposals``), else None; cached on disk next to the data
        (``proposals.split_proposals``) and in memory."""
        if not self.detector(config).needs_proposals:
            return None
        from cnn_apps.applications.detection.proposals import (proposal_cache_dir,
                                                               proposal_settings,
                                                               split_proposals)

        data = self.data(config)
        settings = proposal_settings(config)
        key = repr((sorted(config["data"].items()), config["image_size"], split,
                    sorted((k, repr(v)) for k, v in settings.items())))
        if key not in self._proposal_cache:
            images = data.x_train if split == "train" else data.x_val
            self._proposal_cache[key] = split_proposals(images, settings,
                                                        proposal_cache_dir(config), split)
        return self._proposal_cache[key]

    def train_dataset(self, config):
        data = self.data(config)
        ds = make_detection_dataset(data.x_train, data.gt_train, int(config["batch_size"]),
                                    training=True, seed=int(config.get("seed", 0)),
                                    augment=config.get("augment") or {},
                                    proposals=self.proposals(config, "train"))
        return ds.map(lambda x, y: (x, {"raw": y}))

    def eval_dataset(self, config, split="val"):
        data = self.data(config)
        ds = make_detection_dataset(data.x_val, data.gt_val, int(config["batch_size"]),
                                    training=False, proposals=self.proposals(config, "val"))
        return ds.map(lambda x, y: (x, {"raw": y}))

    # -- model ------------------------------------------------------------------------------
    def resolve_config(self, config):
        """``epochs: null`` (the default) → the chosen model's own ``<model>.epochs``: the
        detectors converge at different speeds (YOLO v1's single responsible cell per object
        learns slower than SSD's many matched default boxes). ``jit_compile=true`` for a
        detector that trains without XLA is a ConfigError."""
        from cnn_apps.errors import ConfigError

        model = config.get("model", "ssd")
        if config.get("jit_compile") and not self.detector(config).supports_jit:
            raise ConfigError(f"model={model} does not support jit_compile=true (its "
                              "two-stage train step runs without XLA); set jit_compile=false")
        if config.get("epochs") is not None:
            return config
        epochs = (config.get(model) or {}).get("epochs")
        if not isinstance(epochs, (int, float)) or isinstance(epochs, bool) or int(epochs) < 1:
            raise ConfigError(f"epochs is null, so {model}.epochs must be an epoch count >= 1; "
                              f"got {epochs!r}. Set epochs=N or {model}.epochs=N.")
        return {**config, "epochs": int(epochs)}

    def detector(self, config):
        return get_detector(config.get("model", "ssd"))

    def build_model(self, config):
        return self.detector(config).build_model(config, len(self.data(config).class_names))

    def model_info(self, config):
        """Class names, input size, detector constants (feature sizes / grid) and the NMS
        settings; serving and ``predict`` read everything from here."""
        key = repr(sorted((k, repr(v)) for k, v in config.items()))
        if key not in self._info_cache:
            data = self.data(config)
            det = self.detector(config)
            model = det.build_model(config, len(data.class_names))  # read its map sizes
            size = int(config["image_size"])
            self._info_cache = {key: {
                "task": self.name, "model": det.name, "backbone": config["backbone"],
                "class_names": data.class_names, "input_shape": [size, size, 3],
                "detector": det.info(config, len(data.class_names), model),
                "postprocess": postprocess_config(config),
                "top_k": int(config.get("max_detections", 100))}}
            if det.needs_proposals:
                from cnn_apps.applications.detection.proposals import proposal_settings

                self._info_cache[key]["proposals"] = proposal_settings(config)
            del model
        return dict(self._info_cache[key])

    def prepare_loading(self, info):
        """Import the module of ``info["model"]`` (lazily loaded detectors register their
        Keras model classes on import) so a fresh process can deserialize the run's model."""
        if info.get("model"):
            self.detector({"model": info["model"]})

    def finalize_model(self, model, config, run_dir):
        return self.detector(config).finalize(model, config, self, run_dir)

    def loss(self, config):
        info = self.model_info(config)
        return {"raw": self.detector(config).loss(config, info)}

    def compile_model(self, model, config, learning_rate):
        self.detector(config).compile_model(model, config, learning_rate,
                                            self.model_info(config))

    # -- inference --------------------------------------------------------------------------
    def detect(self, model, images, info, batch_size=32, proposals=None):
        """Post-processed detections (numpy dict of the four outputs) for raw pixel images.

        Proposal-based detectors take ``proposals`` (N, R, 4) or run selective search on
        ``images`` with the settings in ``info["proposals"]``."""
        import tensorflow as tf

        det = get_detector(info["model"])
        inputs = np.asarray(images, np.float32)
        if det.needs_proposals:
            if proposals is None:
                from cnn_apps.applications.detection.proposals import compute_proposals

                proposals = compute_proposals(np.asarray(images), info["proposals"])
            inputs = {"images": inputs, "proposals": np.asarray(proposals, np.float32)}
        raw = model.predict(inputs, batch_size=batch_size, verbose=0)["raw"]
        outs = [det.postprocess(tf.constant(raw[i:i + batch_size]), info)
                for i in range(0, len(raw), batch_size)]
        return {k: np.concatenate([np.asarray(o[k]) for o in outs]) for k in OUTPUT_KEYS}

    def predict(self, model, images, info, top_k=None):
        """Per image ``{"num_detections", "detections": [{"class", "index", "score", "box"}]}``,
        best first; ``box`` is normalized ``(ymin, xmin, ymax, xmax)`` (multiply by the
        original image's height/width for pixels). ``top_k`` caps detections per image.

        ``images``: (N, H, W, 3) raw 0..255 pixels at the model's input size.
        """
        out = self.detect(model, images, info)
        names = info.get("class_names") or []
        limit = int(top_k) if top_k else int(info.get("top_k", 100))
        results = []
        for i in range(len(out["num_detections"])):
            count = min(int(out["num_detections"][i]), limit)
            rows = []
            for j in range(count):
                index = int(out["detection_classes"][i, j]) - 1
                rows.append({"class": names[index] if 0 <= index < len(names) else str(index),
                             "index": index,
                             "score": round(float(out["detection_scores"][i, j]), 6),
                             "box": [round(float(v), 6) for v in out["detection_boxes"][i, j]]})
            results.append({"num_detections": count, "detections": rows})
        return results

    def annotate(self, image, result, path, class_names=None):
        """Draw one ``predict`` result on ``image`` (any size; boxes are scaled from normalized)
        and write it to ``path`` (PNG)."""
        import cv2

        from cnn_apps.data.visualize import draw_detections

        image = np.asarray(image)
        height, width = image.shape[:2]
        dets = result["detections"]
        boxes = np.array([d["box"] for d in dets], np.float64).reshape(-1, 4) * \
            np.array([height, width, height, width])
        if class_names is None:
            names = {d["index"]: d["class"] for d in dets}
            class_names = [names.get(i, str(i)) for i in range(max(names, default=-1) + 1)]
        picture = draw_detections(image, boxes, [d["index"] for d in dets],
                                  [d["score"] for d in dets], class_names)
        cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, model, config, split="test", run_dir=None):
        """COCO AP / AP50 / AP75 / AP small-medium-large / AR@100 on the val split, boxes in
        the original image size; writes ``predictions.png`` (predictions in class colours,
        ground truth in white) into ``run_dir``."""
        from cnn_apps.metrics.coco_eval import evaluate_detections

        data = self.data(config)
        info = self.model_info(config)
        out = self.detect(model, data.x_val, info, int(config["batch_size"]),
                          proposals=self.proposals(config, "val"))
        predictions = []
        for i, rec in enumerate(data.val_records):
            count = int(out["num_detections"][i])
            scale = np.array([rec["height"], rec["width"]] * 2, np.float64)
            predictions.append({"image_id": rec.get("image_id", i + 1),
                                "boxes": out["detection_boxes"][i, :count] * scale,
                                "scores": out["detection_scores"][i, :count],
                                "classes": out["detection_classes"][i, :count].astype(int) - 1})
        metrics = evaluate_detections(data.val_records, predictions, data.categories,
                                      per_class=True)
        metrics.update({"split": "val", "num_images": len(data.val_records),
                        "model": info["model"], "backbone": info["backbone"]})
        if run_dir is not None:
            self._plot(data, out, Path(run_dir) / "predictions.png")
        return metrics

    def _plot(self, data, out, path, count=4):
        import cv2

        from cnn_apps.data.visualize import draw_detections

        size = data.x_val.shape[1]
        tiles = []
        for i in range(min(count, len(data.x_val))):
            n = int(out["num_detections"][i])
            gt = data.gt_val[i][data.gt_val[i, :, 4] >= 0, :4] * size
            tiles.append(draw_detections(
                data.x_val[i], out["detection_boxes"][i, :n] * size,
                out["detection_classes"][i, :n].astype(int) - 1, out["detection_scores"][i, :n],
                data.class_names, gt_boxes=gt, score_threshold=0.3))
        picture = np.concatenate(tiles, axis=1)
        scale = max(1, 256 // size)
        picture = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))

    # -- serving ----------------------------------------------------------------------------
    def serving_endpoints(self, model, info):
        """``serving_default``: encoded JPEG/PNG bytes (N,) → the four TF OD API outputs
        (resized to the model's input size, NMS in the graph); ``predict_tensor``: float
        pixels (N, S, S, 3) 0..255 → the same outputs.

        Proposal-based detectors (R-CNN, SPP-net, Fast R-CNN) take a second input
        ``proposals``: float32 (N, R, 4) normalized ``(ymin, xmin, ymax, xmax)`` with
        ``R = info["proposals"]["max_proposals"]``, zero rows = padding. Selective search runs
        outside the graph, as in the papers (client side, e.g.
        ``proposals.compute_proposals`` with ``model_info.json``'s ``proposals`` settings);
        normalized boxes stay valid for any image size, so they may come from the original
        image. The output names are the same."""
        import tensorflow as tf

        from cnn_apps.export.signatures import (MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS,
                                                check_image_tensor, check_string_vector,
                                                decode_image_batch, guarded_model_call)

        height, width, channels = (int(v) for v in info["input_shape"])
        det = get_detector(info["model"])
        limits = {"max_bytes": int(info.get("max_image_bytes", MAX_IMAGE_BYTES)),
                  "max_pixels": int(info.get("max_image_pixels", MAX_IMAGE_PIXELS))}

        def run(images):
            return det.postprocess(model(images, training=False)["raw"], info)

        image_spec = tf.TensorSpec([None, height, width, channels], tf.float32, name="images")
        bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
        if det.needs_proposals:
            rois = int(info["proposals"]["max_proposals"])
            proposal_spec = tf.TensorSpec([None, rois, 4], tf.float32, name="proposals")

            def run_with(images, proposals):
                count = tf.shape(images)[0]
                check = tf.debugging.assert_equal(
                    tf.shape(proposals)[0], count,
                    message="proposals must have one (R, 4) row block per image")
                with tf.control_dependencies([check]):
                    proposals = tf.identity(proposals)
                out = det.postprocess(model({"images": images, "proposals": proposals},
                                            training=False)["raw"], info)
                return out

            @tf.function(input_signature=[bytes_spec, proposal_spec])
            def serve_bytes_proposals(image_bytes, proposals):
                images = decode_image_batch(check_string_vector(image_bytes), height, width,
                                            channels, **limits)
                return run_with(images, proposals)

            @tf.function(input_signature=[image_spec, proposal_spec])
            def serve_tensor_proposals(images, proposals):
                return run_with(check_image_tensor(images, height, width, channels), proposals)

            return {"serving_default": serve_bytes_proposals,
                    "predict_tensor": serve_tensor_proposals}

        @tf.function(input_signature=[bytes_spec])
        def serve_bytes(image_bytes):
            images = decode_image_batch(check_string_vector(image_bytes), height, width,
                                        channels, **limits)
            return guarded_model_call(run, images)

        @tf.function(input_signature=[image_spec])
        def serve_tensor(images):
            return guarded_model_call(run, check_image_tensor(images, height, width, channels))

        return {"serving_default": serve_bytes, "predict_tensor": serve_tensor}

    def example_inputs(self, info, batch_size=2):
        """Random pixels (N, S, S, 3); for proposal-based detectors ``{"images", "proposals"}``
        with random valid boxes (some zero padding rows)."""
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, size=(batch_size, *info["input_shape"])).astype(np.float32)
        if "proposals" not in info:
            return images
        rois = int(info["proposals"]["max_proposals"])
        corner = rng.uniform(0.0, 0.6, size=(batch_size, rois, 2))
        size = rng.uniform(0.1, 0.4, size=(batch_size, rois, 2))
        boxes = np.concatenate([corner, corner + size], axis=-1).astype(np.float32)
        boxes[:, rois // 2 + 1:] = 0.0
        return {"images": images, "proposals": boxes}

    def warmup_inputs(self, info, batch_size=2):
        example = self.example_inputs(info, batch_size)
        if not isinstance(example, dict):
            return super().warmup_inputs(info, batch_size)
        from cnn_apps.export.warmup import encode_png_batch

        return {"images": example["images"], "image_bytes": encode_png_batch(example["images"]),
                "proposals": example["proposals"]}
