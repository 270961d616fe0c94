"""The ``cnn-apps`` command: list | train | evaluate | predict | export | serving-config |
compress | serve-cluster | bench.

Errors in user input (files, arguments, config keys) print one message and exit with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EPILOG = """examples:
  cnn-apps train classification                      # digits, default config
  cnn-apps train classification epochs=3 backbone=lenet5 head=paper
  cnn-apps train classification data.dataset=image_folder data.path=/data/flowers
  cnn-apps train classification weights=runs/classification/default/best.keras freeze_backbone_epochs=3
  cnn-apps evaluate runs/classification/default
  cnn-apps predict runs/classification/default img1.png images/ --annotate out/
  cnn-apps export runs/classification/default --format saved_model --out exports/digits
  cnn-apps list backbones
"""

LIST_WHAT = ("tasks", "backbones", "layers", "losses", "datasets")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnn-apps", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="CNN applications: train, evaluate, predict and "
                                            "export models from the CNN literature.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ls = sub.add_parser("list", help="list registered tasks, backbones, layers, losses, datasets",
                        description="Print what is registered, one per line.")
    ls.add_argument("what", choices=LIST_WHAT, help="what to list")

    tr = sub.add_parser("train", help="train a task (then evaluate and export)",
                        description="Train TASK with its packaged default config, a YAML file "
                                    "(--config) and key=value overrides; evaluate the best "
                                    "checkpoint on the test split and export it.",
                        epilog="Overrides use dotted keys: epochs=3 data.path=/x "
                               "augment.rotation=0. Unknown keys are an error that lists the "
                               "valid ones. `cnn-apps train TASK --show-config` prints them.")
    tr.add_argument("task", help="task name (cnn-apps list tasks)")
    tr.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    tr.add_argument("--config", help="YAML file with config values")
    tr.add_argument("--runs", default="runs", help="root folder for runs (default: runs)")
    tr.add_argument("--show-config", action="store_true",
                    help="print the resolved config and exit")
    tr.add_argument("--no-export", action="store_true", help="skip the export step")

    ev = sub.add_parser("evaluate", help="evaluate a trained run on its test split",
                        description="Re-evaluate RUN_DIR's best checkpoint with the field's "
                                    "metric; writes metrics.json.")
    ev.add_argument("run_dir")
    ev.add_argument("--split", default="test", choices=("val", "test"))

    pr = sub.add_parser("predict", help="predict on image files or folders",
                        description="Print one JSON line per image: the top-k classes "
                                    "(classification), the detections (detection), ...")
    pr.add_argument("model", help="run folder or .keras file")
    pr.add_argument("inputs", nargs="+", help="image files or folders of images")
    pr.add_argument("--top-k", type=int, default=None, help="classes (or detections) per image (default: 5)")
    pr.add_argument("--annotate", metavar="DIR", help="write annotated PNGs into DIR")

    ex = sub.add_parser("export", help="export a trained run: saved_model | onnx | tflite",
                        description="SavedModel in TF Serving layout (OUT/<version>/, next "
                                    "integer version, written atomically), ONNX (tf2onnx) or "
                                    "TFLite.")
    ex.add_argument("run_dir", help="run folder or .keras file")
    ex.add_argument("--format", default="saved_model", choices=("saved_model", "onnx", "tflite"))
    ex.add_argument("--out", required=True, help="output folder (TF Serving model base path)")
    ex.add_argument("--int8", action="store_true",
                    help="tflite: full integer (int8) post-training quantization, calibrated "
                         "on the run's validation images")

    sc = sub.add_parser("serving-config", help="write a TF Serving models.config for exports",
                        description="One model_config_list entry per export base folder "
                                    "(OUT/<version>/saved_model.pb): name, absolute base path, "
                                    "version policy. Serve with tensorflow_model_server "
                                    "--model_config_file=models.config.")
    sc.add_argument("export_dirs", nargs="+", help="export base folders")
    sc.add_argument("--out", default="models.config", help="file to write (default: "
                                                           "models.config)")
    sc.add_argument("--names", nargs="+", help="model names (default: the folder names)")
    sc.add_argument("--policy", default="latest", choices=("latest", "all", "specific"),
                    help="version policy (default: latest)")
    sc.add_argument("--num-versions", type=int, default=1, help="latest: how many versions")
    sc.add_argument("--versions", type=int, nargs="+", help="specific: which versions")

    co = sub.add_parser("compress", help="compress a trained run: svd | prune | filter_prune | "
                                         "hash | pq | binary | int8",
                        description="Compress RUN_DIR's best model, optionally fine-tune it, "
                                    "and write compressed_<method>.keras (.tflite for int8) and "
                                    "compress_report.json: parameters, bytes on disk, top-1 "
                                    "before/after and latency ratio.",
                        epilog="examples: cnn-apps compress runs/classification/default "
                               "method=svd param_ratio=0.4 finetune_epochs=3 | method=prune "
                               "sparsity=0.9 finetune_epochs=5 | method=pq clusters=16 | "
                               "method=int8")
    co.add_argument("run_dir", help="run folder (best.keras + config.yaml)")
    co.add_argument("options", nargs="+", metavar="key=value",
                    help="method=... plus method options and finetune_epochs=N")
    co.add_argument("--out", help="output folder (default: the run folder)")

    sv = sub.add_parser("serve-cluster", help="run a worker or ps server for "
                                              "strategy=parameter_server",
                        description="Start this task's tf.distribute.Server of a "
                                    "ParameterServerStrategy cluster (cluster and task from "
                                    "TF_CONFIG, or Slurm/Kubernetes) and serve until stopped. "
                                    "The chief runs `cnn-apps train TASK "
                                    "strategy=parameter_server`; see docs/distributed.md.")
    sv.add_argument("--task-type", choices=("worker", "ps"),
                    help="this task's job (default: TF_CONFIG's task.type)")
    sv.add_argument("--task-index", type=int,
                    help="this task's index in its job (default: TF_CONFIG's task.index)")
    sv.add_argument("--cluster-resolver", choices=("tf_config", "slurm", "kubernetes"),
                    help="where the cluster comes from (default: TF_CONFIG)")

    be = sub.add_parser("bench", help="run a benchmark from bench/",
                        description="Run bench/NAME.py from the source checkout; it prints "
                                    "ratios against a peer measured in the same run.")
    be.add_argument("name", help="benchmark name, e.g. layers")
    be.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    return p


def cmd_list(args) -> None:
    if args.what == "tasks":
        from cnn_apps.applications import PLANNED, TASKS

        for name, (_, _, desc, _) in sorted(TASKS.items()):
            print(f"{name:18s} {desc}")
        for name, desc in sorted(PLANNED.items()):
            print(f"{name:18s} (planned) {desc}")
    elif args.what == "backbones":
        # Numbers come from the cached zoo_table.json (bench/backbone_table.py); backbones
        # missing from it (or changed since) are built and counted now, which takes a while.
        from cnn_apps.backbones.flops import load_zoo_table, zoo_rows
        from cnn_apps.backbones.registry import list_backbones

        missing = sorted(set(list_backbones()) - set(load_zoo_table()))
        if missing:
            print(f"(computing {len(missing)} backbone(s) not in the cached table: "
                  f"{', '.join(missing)})", file=sys.stderr)
        print(f"{'name':24s} {'input':11s} {'params':>8s} {'GFLOPs':>8s} {'strides':14s} "
              f"{'imagenet':8s} description")
        for row in zoo_rows():
            print(f"{row['name']:24s} {'x'.join(map(str, row['input_shape'])):11s} "
                  f"{row['trainable_params'] / 1e6:7.2f}M {row['flops'] / 1e9:8.3f} "
                  f"{','.join(map(str, row['strides'])):14s} "
                  f"{'yes' if row['imagenet_weights'] else 'no':8s} {row['description']}")
    elif args.what == "layers":
        from cnn_apps.layers import list_layers

        for name, desc in list_layers():
            print(f"{name:28s} {desc}")
    elif args.what == "losses":
        from cnn_apps.losses import list_losses

        for name, desc in list_losses():
            print(f"{name:28s} {desc}")
    else:
        from cnn_apps.data import list_datasets

        for name, desc in list_datasets():
            print(f"{name:18s} {desc}")


def cmd_train(args) -> None:
    import yaml

    from cnn_apps.applications import get_task
    from cnn_apps.config import load_config

    task = get_task(args.task)
    config = load_config(args.task, args.config, args.overrides)
    if args.show_config:
        print(yaml.safe_dump(config, sort_keys=False), end="")
        return
    from cnn_apps.training import train

    result = train(task, config, runs_root=args.runs, export=not args.no_export)
    print(json.dumps({"run_dir": str(result.run_dir), **_headline(result.metrics)}, indent=2))


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}


def _run_config(run_dir: Path) -> dict:
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        from cnn_apps.errors import CnnAppsError

        raise CnnAppsError(f"'{run_dir}' is not a run folder (no config.yaml)")
    return yaml.safe_load(path.read_text())


def cmd_evaluate(args) -> None:
    from cnn_apps.applications import get_task
    from cnn_apps.export import load_run_model
    from cnn_apps.utils.io import atomic_write_json

    run_dir = Path(args.run_dir)
    config = _run_config(run_dir)
    model, info = load_run_model(run_dir)
    metrics = get_task(info["task"]).evaluate(model, config, split=args.split, run_dir=run_dir)
    atomic_write_json(run_dir / f"metrics_{args.split}.json" if args.split != "test"
                      else run_dir / "metrics.json", metrics)
    print(json.dumps(_headline(metrics), indent=2))


def _image_files(inputs):
    from cnn_apps.data.images import IMAGE_SUFFIXES
    from cnn_apps.errors import DataError

    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"folder '{path}' has no images")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"input '{path}' does not exist")
    return files


def cmd_predict(args) -> None:
    import cv2
    import numpy as np

    from cnn_apps.applications import get_task
    from cnn_apps.data.images import read_image
    from cnn_apps.export import load_run_model

    model, info = load_run_model(args.model)
    task = get_task(info["task"])
    height, width, channels = info["input_shape"]
    files = _image_files(args.inputs)
    originals = [read_image(f, 3) for f in files]
    batch = np.stack([cv2.resize(read_image(f, channels), (width, height),
                                 interpolation=cv2.INTER_AREA).reshape(height, width, channels)
                      for f in files])
    results = task.predict(model, batch, info, top_k=args.top_k)
    if args.annotate:
        Path(args.annotate).mkdir(parents=True, exist_ok=True)
    for path, image, result in zip(files, originals, results):
        print(json.dumps({"image": str(path), **result}))
        if args.annotate:
            # Tasks with non-class results (boxes) draw their own pictures.
            annotate = getattr(task, "annotate", None) or _annotate
            annotate(image, result, Path(args.annotate) / f"{path.stem}_pred.png")


def _annotate(image, result, out_path):
    import cv2
    import numpy as np

    scale = max(1, 256 // max(image.shape[:2]))
    canvas = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    canvas = np.ascontiguousarray(canvas[..., ::-1])
    pad = np.full((22 * len(result["top_k"]) + 8, canvas.shape[1], 3), 255, np.uint8)
    canvas = np.concatenate([canvas, pad])
    for i, item in enumerate(result["top_k"]):
        cv2.putText(canvas, f"{item['class']}: {item['score']:.3f}",
                    (4, canvas.shape[0] - pad.shape[0] + 20 + 22 * i),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(out_path), canvas)


def cmd_export(args) -> None:
    from cnn_apps.export import export_run

    path = export_run(args.run_dir, args.format, args.out, int8=args.int8)
    print(json.dumps({"format": args.format, "path": str(path)}))


def cmd_serving_config(args) -> None:
    from cnn_apps.export.serving_config import write_serving_config

    path = write_serving_config(args.export_dirs, args.out, names=args.names,
                                policy=args.policy, num_versions=args.num_versions,
                                versions=args.versions)
    print(json.dumps({"path": str(path), "models": len(args.export_dirs)}))


def cmd_compress(args) -> None:
    from cnn_apps.compression.command import compress_run, parse_options
    from cnn_apps.errors import CnnAppsError

    options = parse_options(args.options)
    method = options.pop("method", None)
    if method is None:
        raise CnnAppsError("compress needs method=svd|prune|filter_prune|hash|pq|binary|int8")
    try:
        compress_run(args.run_dir, method, options, out_dir=args.out)
    except ValueError as exc:  # bad method options surface as one clear message
        raise CnnAppsError(str(exc)) from exc


def cmd_serve_cluster(args) -> None:
    from cnn_apps.training.parameter_server import serve

    serve(args.task_type, args.task_index, args.cluster_resolver)


def cmd_bench(args) -> None:
    import runpy

    from cnn_apps.errors import CnnAppsError

    script = Path(__file__).resolve().parent.parent / "bench" / f"{args.name}.py"
    if not script.is_file():
        available = sorted(p.stem for p in script.parent.glob("*.py")
                           if not p.stem.startswith("_")) if script.parent.is_dir() else []
        raise CnnAppsError(f"no benchmark '{args.name}' (looked for {script}); available: "
                           f"{', '.join(available) or 'none (benchmarks live in the source checkout)'}")
    sys.argv = [str(script), *args.args]
    runpy.run_path(str(script), run_name="__main__")


COMMANDS = {"list": cmd_list, "train": cmd_train, "evaluate": cmd_evaluate,
            "predict": cmd_predict, "export": cmd_export, "bench": cmd_bench,
            "serving-config": cmd_serving_config, "compress": cmd_compress,
            "serve-cluster": cmd_serve_cluster}


def main(argv=None) -> int:
    parser = _parser()
    # key=value overrides may come after options (`train TASK --runs r epochs=3`); argparse
    # leaves such late positionals unparsed, so collect them here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF C++ noise; errors surface in Python
    from cnn_apps.errors import CnnAppsError

    try:
        COMMANDS[args.command](args)
    except (CnnAppsError, FileNotFoundError) as exc:
        if args.debug:
            raise
        print(f"cnn-apps: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnn-apps: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
