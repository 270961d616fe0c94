"""`cnn-apps` command: help, list, predict/evaluate/export, and clear errors on bad input."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from cnn_apps.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("command", ["list", "train", "evaluate", "predict", "export", "bench"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: cnn-apps" in capsys.readouterr().out


def test_console_script_help_runs():
    out = subprocess.run([sys.executable, "-m", "cnn_apps.cli", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "train" in out.stdout and "export" in out.stdout


@pytest.mark.parametrize("what, expected", [
    ("tasks", "classification"), ("backbones", "resnet18"), ("datasets", "digits"),
    ("layers", "TiledConv2D"), ("losses", "TripletLoss"),
])
def test_list(what, expected, capsys):
    code, out, _ = run_cli(capsys, "list", what)
    assert code == 0 and expected in out
    assert all(line.strip() for line in out.splitlines())


def test_show_config_applies_overrides(capsys):
    code, out, _ = run_cli(capsys, "train", "classification", "epochs=4", "--show-config")
    assert code == 0 and "epochs: 4" in out


def write_png(path, value=128, size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size, 3), value, np.uint8))


@pytest.mark.parametrize("case", ["unknown_key", "unknown_backbone", "corrupt_image",
                                  "empty_class", "missing_weights", "unknown_task"])
def test_bad_input_gives_one_clear_message_and_exit_2(case, tmp_path, capsys):
    root = tmp_path / "images"
    for cls in ("a", "b"):
        for i in range(3):
            write_png(root / cls / f"{i}.png", 40 * i)
    args = ["train", "classification", "--runs", str(tmp_path / "runs"), "epochs=1",
            "data.dataset=image_folder", f"data.path={root}"]
    expect = {
        "unknown_key": (["epoch=1"], "unknown config key 'epoch'"),
        "unknown_backbone": (["backbone=resnet81"], "unknown backbone 'resnet81'"),
        "missing_weights": ([f"weights={tmp_path / 'nope.weights.h5'}"], "nope.weights.h5"),
        "unknown_task": ([], "unknown task 'clasification'"),
        "corrupt_image": ([], "corrupt.png"),
        "empty_class": ([], "has no images"),
    }[case]
    if case == "corrupt_image":
        (root / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    if case == "empty_class":
        (root / "c").mkdir()
    if case == "unknown_task":
        args[1] = "clasification"
    code, out, err = run_cli(capsys, *args, *expect[0])
    assert code == 2
    assert expect[1] in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_debug_flag_shows_the_traceback():
    with pytest.raises(Exception, match="unknown config key"):
        main(["--debug", "train", "classification", "epoch=1"])


def test_predict_prints_json_and_annotates(trained_run, tmp_path, capsys):
    result, config = trained_run
    from cnn_apps.applications.classification import TASK

    data = TASK.data(config)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"digit{i}.png"), data.x_test[i][..., ::-1])
    code, out, _ = run_cli(capsys, "predict", str(result.run_dir), str(folder), "--top-k", "3",
                           "--annotate", str(tmp_path / "ann"))
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 and len(rows[0]["top_k"]) == 3
    expected = result.model.predict(data.x_test[:2].astype("float32"), verbose=0)["probabilities"]
    assert [r["top_k"][0]["index"] for r in rows] == expected.argmax(1).tolist()
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["digit0_pred.png",
                                                                   "digit1_pred.png"]


def test_evaluate_and_export_commands(trained_run, tmp_path, capsys):
    result, _ = trained_run
    code, out, _ = run_cli(capsys, "evaluate", str(result.run_dir), "--split", "val")
    assert code == 0 and "top1" in json.loads(out)
    code, out, _ = run_cli(capsys, "export", str(result.run_dir), "--format", "saved_model",
                           "--out", str(tmp_path / "serving"))
    assert code == 0 and json.loads(out)["path"].endswith("1")


def test_predict_on_missing_input_is_clear(trained_run, capsys):
    result, _ = trained_run
    code, _, err = run_cli(capsys, "predict", str(result.run_dir), "/no/such/image.png")
    assert code == 2 and "/no/such/image.png" in err


def test_predict_in_a_fresh_process(trained_run, tmp_path):
    """The CLI must register the task's custom layers before loading best.keras."""
    result, config = trained_run
    from cnn_apps.applications.classification import TASK

    image = tmp_path / "digit.png"
    cv2.imwrite(str(image), TASK.data(config).x_test[0][..., ::-1])
    out = subprocess.run([sys.executable, "-m", "cnn_apps.cli", "predict", str(result.run_dir),
                          str(image)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1])["top_k"]
