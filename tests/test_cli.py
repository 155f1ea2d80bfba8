"""Each stage as its own command, and every bad input: one line, non-zero exit, no traceback."""
import shutil

import pytest
import torch

from conftest import CKPT, CLASSES, R20_CKPT, run_cli, tiny_imagefolder


def assert_one_line_error(res, *fragments):
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_help_lists_stage_commands():
    res = run_cli("--help")
    for cmd in ("run", "export", "quantize", "evaluate", "bench", "report"):
        assert cmd in res.stdout


@pytest.mark.pipeline
def test_stage_commands_chain(tmp_path, cifar):
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    # the bundled ResNet-20 (the chain is under test, not the model: the shared ResNet18 took 52 s here)
    r = run_cli("export", "--checkpoint", R20_CKPT, "--arch", "resnet20-cifar", "--data", cifar, "--out", fp32)
    assert r.returncode == 0 and "agreement 100.00%" in r.stdout, r.stderr[-2000:]
    r = run_cli("quantize", fp32, "--out", int8, "--data", cifar, "--calib-size", 64)
    assert r.returncode == 0 and int8.is_file(), r.stderr[-2000:]
    r = run_cli("evaluate", fp32, int8, "--data", cifar, "--eval-limit", 200)
    assert r.returncode == 0 and r.stdout.count("top-1") == 2 and "agreement" in r.stdout, r.stderr[-2000:]
    r = run_cli("bench", fp32, int8, "--runs", 20, "--batch-sizes", "1")
    assert r.returncode == 0 and "| " + str(int8) in r.stdout and "CPUExecutionProvider" in r.stdout


def test_run_from_onnx_and_cifar_pickle(tmp_path):
    from conftest import make_cifar_pickle

    data = make_cifar_pickle(tmp_path / "cifar-10-batches-py", n_per_class=6)
    out = tmp_path / "out"
    from qdeploy.bundled import bundled_run_dir

    r = run_cli("run", "--targets", "ort-cpu", "--onnx", bundled_run_dir() / "fp32.onnx", "--data", data, "--out", out,
                "--calib-size", 30,
                "--bench-runs", 10, "--bench-batches", "1", "--bench-seconds", 0.05)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "int8_default.onnx").is_file() and "60 evaluation images" in r.stderr


def test_error_missing_checkpoint(tmp_path, cifar):
    assert_one_line_error(run_cli("run", "--checkpoint", tmp_path / "x.pth", "--data", cifar, "--out", tmp_path / "o"),
                          "not found")


def test_error_corrupt_checkpoint(tmp_path, cifar):
    p = tmp_path / "bad.pth"
    p.write_bytes(b"\x80\x04garbage")
    assert_one_line_error(run_cli("run", "--checkpoint", p, "--data", cifar, "--out", tmp_path / "o"),
                          "cannot read checkpoint")


def test_error_wrong_architecture(tmp_path, cifar):
    f = tmp_path / "net.py"
    f.write_text("import torch.nn as nn\nclass Tiny(nn.Module):\n    def __init__(self, num_classes=10):\n"
                 "        super().__init__(); self.fc = nn.Linear(3, num_classes)\n"
                 "    def forward(self, x):\n        return self.fc(x.mean((2, 3)))\n")
    res = run_cli("run", "--targets", "ort-cpu", "--checkpoint", CKPT, "--arch", f"{f}:Tiny", "--data", cifar, "--out", tmp_path / "o")
    assert_one_line_error(res, "does not fit architecture", "120 unexpected", "1 mis-shaped")
    assert_one_line_error(run_cli("run", "--checkpoint", CKPT, "--arch", "vgg", "--data", cifar,
                                  "--out", tmp_path / "o"), "unknown architecture")


@pytest.mark.pipeline
def test_user_architecture_runs_through(tmp_path, cifar):
    """A user's own CIFAR model file goes through the pipeline without touching qdeploy."""
    f = tmp_path / "net.py"
    f.write_text("import torch.nn as nn\nclass Small(nn.Module):\n    def __init__(self, width=8, num_classes=10):\n"
                 "        super().__init__()\n        self.f = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),"
                 " nn.AdaptiveAvgPool2d(1), nn.Flatten())\n        self.fc = nn.Linear(width, num_classes)\n"
                 "    def forward(self, x):\n        return self.fc(self.f(x))\n")
    import importlib.util

    spec = importlib.util.spec_from_file_location("net", f)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    torch.save(mod.Small(width=6).state_dict(), tmp_path / "small.pth")
    r = run_cli("run", "--targets", "ort-cpu", "--checkpoint", tmp_path / "small.pth", "--arch", f"{f}:Small", "--arch-kwargs", '{"width": 6}',
                "--data", cifar, "--out", tmp_path / "o", "--eval-limit", 50, "--calib-size", 20,
                "--bench-runs", 10, "--bench-batches", "1", "--bench-seconds", 0.05)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "o" / "int8_default.onnx").is_file()


def test_error_empty_data(tmp_path):
    (tmp_path / "d" / "train" / "cat").mkdir(parents=True)
    assert_one_line_error(run_cli("run", "--data", tmp_path / "d", "--out", tmp_path / "o"), "holds no images")


def test_error_mixed_data(tmp_path):
    root = tiny_imagefolder(tmp_path / "d", per_class=2, split="train")
    shutil.copy(next((root / "train" / "cat").iterdir()), root / "train" / "stray.jpg")
    assert_one_line_error(run_cli("run", "--data", root, "--out", tmp_path / "o"), "mixes 1 loose images")


def test_error_only_non_images(tmp_path):
    d = tmp_path / "d" / "train" / "cat"
    d.mkdir(parents=True)
    (d / "a.txt").write_text("x")
    (d / "b.csv").write_text("y")
    assert_one_line_error(run_cli("run", "--data", tmp_path / "d", "--out", tmp_path / "o"),
                          "holds no images", "skipped 2 non-image files")


def test_error_class_count_mismatch(tmp_path):
    root = tiny_imagefolder(tmp_path / "d", per_class=4, split="train", classes=CLASSES[:3])
    tiny_imagefolder(root, per_class=2, split="test", classes=CLASSES[:3])
    res = run_cli("run", "--data", root, "--out", tmp_path / "o", "--calib-size", 6)
    assert_one_line_error(res, "has 10 outputs but the data has 3 classes")
    assert not (tmp_path / "o" / "fp32.onnx").exists()


def test_error_unwritable_output(tmp_path, cifar):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = run_cli("run", "--targets", "ort-cpu", "--data", cifar, "--out", blocker / "sub", "--eval-limit", 20, "--calib-size", 10)
    assert_one_line_error(res, "cannot write to", "--out")


def test_error_bad_options(tmp_path, cifar):
    assert_one_line_error(run_cli("run", "--variants", "default,turbo", "--out", tmp_path / "o"), "unknown variant")
    assert_one_line_error(run_cli("run", "--mean", "a,b,c", "--out", tmp_path / "o"), "--mean")
    assert_one_line_error(run_cli("quantize", tmp_path / "missing.onnx"), "not found")
    # PyTorch-variant options are checked before export, and the run stops with exit 2
    for opt, value, words in (("--qat-init", "bogus", "use ptq or observe"), ("--qat-val-size", -1, "must be >= 0"),
                              ("--qat-epochs", 0, "epochs >= 1")):
        res = run_cli("run", "--variants", "pt-qat", opt, value, "--out", tmp_path / "q")
        assert_one_line_error(res, words)
        assert not (tmp_path / "q" / "fp32.onnx").exists()
    # Ray options are checked before any work too
    assert_one_line_error(run_cli("run", "--ray-cpus", 2, "--out", tmp_path / "r"), "--ray-cpus sizes the local")
    assert_one_line_error(run_cli("run", "--ray-address", "auto", "--ray-cpus", 2, "--out", tmp_path / "r"),
                          "has its own CPUs")
    assert_one_line_error(run_cli("run", "--ray", "--task", "image-to-image", "--out", tmp_path / "r"),
                          "--ray shards classification evaluation only")
    assert not (tmp_path / "r").exists()


def test_debug_shows_traceback(tmp_path, cifar):
    res = run_cli("--debug", "run", "--checkpoint", tmp_path / "x.pth", "--data", cifar, "--out", tmp_path / "o")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_error_unknown_auto_method(tmp_path, cifar):
    assert_one_line_error(run_cli("run", "--targets", "ort-cpu", "--data", cifar, "--out", tmp_path / "o", "--auto", "--auto-methods", "minmax,kl"),
                          "--auto-methods", "entropy")


def test_error_unknown_tune(tmp_path, cifar):
    assert_one_line_error(run_cli("train", "--arch", "efficientnet-lite0", "--pretrained", "imagenet", "--tune", "all",
                                  "--data", cifar, "--out", tmp_path / "o"), "--tune 'all' is unknown")
