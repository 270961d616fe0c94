"""`cnn-apps compress` end to end on the tiny session run (report keys, files, bad input)."""

import json

import numpy as np
import pytest

from cnn_apps.cli import main
from cnn_apps.compression import compress_run
from cnn_apps.errors import CnnAppsError

KEYS = {"params", "nonzero_params", "bytes", "gzip_bytes", "top1"}


def _check(report, out, method):
    assert set(report) >= {"method", "before", "after", "details", "latency_ratio", "top1_drop",
                           "model_path", "finetune_epochs"}
    assert KEYS <= set(report["before"]) and KEYS <= set(report["after"])
    saved = json.loads((out / "compress_report.json").read_text())
    assert saved["method"] == method and saved["after"]["top1"] == report["after"]["top1"]
    assert report["top1_drop"] == pytest.approx(report["before"]["top1"]
                                                - report["after"]["top1"])
    assert report["latency_ratio"] > 0
    assert (out / report["model_path"].split("/")[-1]).is_file()


@pytest.mark.parametrize("method, options", [
    ("svd", {"param_ratio": 0.4, "finetune_epochs": 1}),
    ("prune", {"sparsity": 0.8, "finetune_epochs": 1}),
    ("prune", {"sparsity": 0.5}),
    ("filter_prune", {"threshold": 0.5}),
    ("hash", {"factor": 4}),
    ("pq", {"clusters": 8}),
])
def test_compress_methods_write_model_and_report(trained_run, tmp_path, method, options):
    import keras

    result, _ = trained_run
    report = compress_run(result.run_dir, method, {**options, "latency_repeats": 1},
                          out_dir=tmp_path,
                          verbose=False)
    _check(report, tmp_path, method)
    model = keras.saving.load_model(tmp_path / f"compressed_{method}.keras")
    assert model.count_params() == report["after"]["params"]
    if method == "prune":
        total = report["before"]["params"]
        assert report["after"]["nonzero_params"] < total
        assert report["details"]["sparsity"] == pytest.approx(options["sparsity"], abs=0.01)
    if method in ("svd", "hash"):
        assert report["details"]["dense_param_ratio"] <= (0.4 if method == "svd" else 0.3)
    if method == "pq":
        assert report["details"]["quantization"]["ratio"] > 1


def test_compress_int8_and_binary(trained_run, tmp_path):
    result, _ = trained_run
    report = compress_run(result.run_dir, "int8", {"calibration": 50, "latency_repeats": 1},
                          out_dir=tmp_path, verbose=False)
    _check(report, tmp_path, "int8")
    assert report["model_path"].endswith("compressed_int8.tflite")
    assert report["after"]["bytes"] < report["before"]["bytes"]
    report = compress_run(result.run_dir, "binary", {"epochs": 1, "latency_repeats": 1},
                          out_dir=tmp_path, verbose=False)
    _check(report, tmp_path, "binary")
    assert 0.0 <= report["after"]["top1"] <= 1.0


def test_compress_cli_prints_table_and_rejects_bad_input(trained_run, tmp_path, capsys):
    result, _ = trained_run
    assert main(["compress", str(result.run_dir), "method=prune", "sparsity=0.5",
                 "latency_repeats=1", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "non-zero parameters" in printed and "top-1" in printed
    assert (tmp_path / "compressed_prune.keras").is_file()
    assert main(["compress", str(result.run_dir), "method=zip"]) == 2
    assert "method must be one of" in capsys.readouterr().err
    assert main(["compress", str(result.run_dir), "sparsity=0.5"]) == 2
    assert main(["compress", str(result.run_dir), "method=prune", "sparsity=1.5",
                 "--out", str(tmp_path / "x")]) == 2
    assert "must be a number in [0, 1)" in capsys.readouterr().err
    with pytest.raises(CnnAppsError, match="unknown option"):
        compress_run(result.run_dir, "svd", {"sparsity": 0.5}, verbose=False)
    with pytest.raises(CnnAppsError, match="not a run folder"):
        compress_run(tmp_path, "svd", {}, verbose=False)
