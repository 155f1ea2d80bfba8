"""Defects 3 and 4: the artifact is the source of truth for preprocessing, classes and architecture."""
import shutil

import onnx
import pytest

from conftest import CLASSES, run_cli
from qdeploy.artifacts import read_info
from qdeploy.bundled import bundled_run_dir
from qdeploy.data import PreprocessFlags, PreprocessSpec
from qdeploy.errors import ConfigError
from qdeploy.source import SourceConfig, resolve_source

BUNDLED = bundled_run_dir()
IMAGENET = PreprocessSpec.imagenet(224)
IMAGENET_FLAGS = PreprocessFlags(norm="imagenet", size=224)


def test_onnx_metadata_is_used_not_cli_defaults():
    src = resolve_source(SourceConfig(onnx=str(BUNDLED / "fp32.onnx")))
    assert src.preprocess == read_info(BUNDLED / "fp32.onnx").preprocess and src.classes == CLASSES
    assert src.origin["preprocess"].startswith("metadata")


def test_contradicting_flag_is_an_error_unless_overridden():
    with pytest.raises(ConfigError, match="contradicts the preprocessing stored in the metadata of fp32.onnx"):
        resolve_source(SourceConfig(onnx=str(BUNDLED / "fp32.onnx"), preprocess=IMAGENET_FLAGS))
    src = resolve_source(SourceConfig(onnx=str(BUNDLED / "fp32.onnx"), preprocess=IMAGENET_FLAGS, override_preprocess=True))
    assert src.preprocess == IMAGENET


def test_flags_that_agree_with_the_file_are_no_contradiction():
    src = resolve_source(SourceConfig(onnx=str(BUNDLED / "fp32.onnx"), preprocess=PreprocessFlags(size=32)))
    assert src.preprocess == PreprocessSpec() and src.origin["preprocess"].startswith("metadata")
    with pytest.raises(ConfigError, match="contradicts"):
        resolve_source(SourceConfig(onnx=str(BUNDLED / "fp32.onnx"), preprocess=PreprocessFlags(size=224)))


def test_file_without_metadata_needs_flags(tmp_path):
    m = onnx.load(str(BUNDLED / "fp32.onnx"))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "foreign.onnx"))
    info = read_info(tmp_path / "foreign.onnx")
    assert info.preprocess is None and info.classes is None  # no silent CIFAR default
    with pytest.raises(ConfigError, match="carries no qdeploy preprocessing metadata"):
        resolve_source(SourceConfig(onnx=str(tmp_path / "foreign.onnx")))
    assert resolve_source(SourceConfig(onnx=str(tmp_path / "foreign.onnx"), preprocess=IMAGENET_FLAGS)).preprocess == IMAGENET


def test_cli_run_on_foreign_onnx_says_what_to_pass(tmp_path, cifar):
    m = onnx.load(str(BUNDLED / "fp32.onnx"))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "foreign.onnx"))
    res = run_cli("run", "--targets", "ort-cpu", "--onnx", tmp_path / "foreign.onnx", "--data", cifar, "--out", tmp_path / "o")
    assert res.returncode == 2 and "pass it explicitly: --size N and --norm" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_checkpoint_record_gives_arch_classes_preprocessing(tmp_path):
    ckpt = BUNDLED / "train" / "best.pth"
    src = resolve_source(SourceConfig(checkpoint=str(ckpt)))
    assert src.arch == "resnet20-cifar" and src.classes == CLASSES and src.preprocess == PreprocessSpec()
    assert src.origin == {"preprocess": "record best.json", "arch": "record best.json", "classes": "record best.json"}
    with pytest.raises(ConfigError, match="--arch contradicts the architecture"):
        resolve_source(SourceConfig(checkpoint=str(ckpt), arch="resnet18-cifar"))
    bare = tmp_path / "model.pth"
    shutil.copy(ckpt, bare)
    assert resolve_source(SourceConfig(checkpoint=str(bare))).origin["arch"] == "default"
