"""The zoo's networks have torchvision's and timm's layouts: parameter counts equal to those libraries' published
figures (torchvision's weight metadata `num_params`, timm's model cards), the state_dict keys and shapes their
source files give, and a checkpoint saved in that layout loads strictly through `load_model` (with the class count,
patch size, width, depth and window read from it)."""
import pytest
import torch

from qdeploy.errors import ArchitectureError, CheckpointError, ConfigError
from qdeploy.models import ARCHITECTURES, build_model, load_model
from qdeploy.models.zoo import ZOO
from qdeploy.models.zoo.layers import count_parameters
from qdeploy.source import SourceConfig

# torchvision/models/*.py weight metadata "num_params" (ImageNet, 1000 classes); timm: ViT-Tiny/DeiT-Tiny 5.72M,
# ViT-Small 22.05M, Swin-T 28.29M (torchvision's swin_t, the same network: 28,288,354), ConvNeXt-Tiny 28.59M
# (torchvision's convnext_tiny: 28,589,128)
PUBLISHED = {"resnet50": 25_557_032, "mobilenet_v3_small": 2_542_856, "mobilenet_v3_large": 5_483_032,
             "efficientnet_b0": 5_288_548, "regnet_y_400mf": 4_344_144, "regnet_x_400mf": 5_495_976,
             "vit_tiny_patch16_224": 5_717_416, "deit_tiny_patch16_224": 5_717_416,
             "vit_small_patch16_224": 22_050_664, "swin_tiny_patch4_window7_224": 28_288_354,
             "convnext_tiny": 28_589_128}
# timm publishes the smallest ConvNeXts rounded: atto 3.7M, femto 5.2M
ROUNDED = {"convnext_atto": 3.7e6, "convnext_femto": 5.2e6}

# (key, shape) pairs read off the libraries' source: module names, nesting and where a stride or bias sits
KEYS = {
    "resnet50": [("conv1.weight", (64, 3, 7, 7)), ("layer1.0.downsample.0.weight", (256, 64, 1, 1)),
                 ("layer2.0.conv2.weight", (128, 128, 3, 3)), ("layer4.2.bn3.running_var", (2048,)),
                 ("fc.weight", (1000, 2048))],
    "mobilenet_v3_small": [("features.0.0.weight", (16, 3, 3, 3)), ("features.1.block.1.fc1.weight", (8, 16, 1, 1)),
                           ("features.4.block.2.fc2.bias", (96,)), ("features.12.0.weight", (576, 96, 1, 1)),
                           ("classifier.0.weight", (1024, 576)), ("classifier.3.weight", (1000, 1024))],
    "efficientnet_b0": [("features.1.0.block.1.fc1.weight", (8, 32, 1, 1)),
                        ("features.2.0.block.0.0.weight", (96, 16, 1, 1)),
                        ("features.2.0.block.2.fc1.weight", (4, 96, 1, 1)), ("features.8.0.weight", (1280, 320, 1, 1)),
                        ("classifier.1.weight", (1000, 1280))],
    "regnet_y_400mf": [("stem.0.weight", (32, 3, 3, 3)), ("trunk_output.block1.block1-0.proj.0.weight", (48, 32, 1, 1)),
                       ("trunk_output.block1.block1-0.f.b.0.weight", (48, 8, 3, 3)),
                       ("trunk_output.block1.block1-0.f.se.fc1.weight", (8, 48, 1, 1)),
                       ("trunk_output.block4.block4-5.f.c.1.weight", (440,)), ("fc.weight", (1000, 440))],
    "vit_tiny_patch16_224": [("cls_token", (1, 1, 192)), ("pos_embed", (1, 197, 192)),
                             ("patch_embed.proj.weight", (192, 3, 16, 16)), ("blocks.11.attn.qkv.weight", (576, 192)),
                             ("blocks.0.mlp.fc1.weight", (768, 192)), ("norm.bias", (192,)), ("head.weight", (1000, 192))],
    "convnext_atto": [("stem.0.weight", (40, 3, 4, 4)), ("stem.1.weight", (40,)),
                      ("stages.1.downsample.1.weight", (80, 40, 2, 2)), ("stages.2.blocks.5.conv_dw.weight", (160, 1, 7, 7)),
                      ("stages.0.blocks.0.mlp.fc1.weight", (160, 40, 1, 1)), ("stages.3.blocks.1.gamma", (320,)),
                      ("head.norm.weight", (320,)), ("head.fc.weight", (1000, 320))],
    "convnext_tiny": [("stages.0.blocks.0.mlp.fc1.weight", (384, 96)), ("stages.0.blocks.0.norm.weight", (96,))],
    "swin_tiny_patch4_window7_224": [("patch_embed.proj.weight", (96, 3, 4, 4)), ("patch_embed.norm.weight", (96,)),
                                     ("layers.0.blocks.1.attn.relative_position_bias_table", (169, 3)),
                                     ("layers.1.downsample.reduction.weight", (192, 384)),
                                     ("layers.3.blocks.1.mlp.fc2.weight", (768, 3072)), ("head.fc.weight", (1000, 768))],
}


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_parameter_counts_are_the_published_ones(arch):
    assert count_parameters(build_model(arch)) == PUBLISHED[arch]


@pytest.mark.parametrize("arch", sorted(ROUNDED))
def test_smallest_convnexts_match_timms_rounded_counts(arch):
    assert round(count_parameters(build_model(arch)) / 1e5) * 1e5 == ROUNDED[arch]


@pytest.mark.parametrize("arch", sorted(KEYS))
def test_state_dict_keys_and_shapes_follow_the_library(arch):
    state = build_model(arch).state_dict()
    for key, shape in KEYS[arch]:
        assert key in state, key
        assert tuple(state[key].shape) == shape, key


def test_every_zoo_name_is_an_architecture_and_runs_at_its_size():
    assert set(ZOO) <= set(ARCHITECTURES)
    for arch in ("mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "convnext_atto"):
        with torch.no_grad():
            assert build_model(arch, num_classes=10).eval()(torch.rand(2, 3, 64, 64)).shape == (2, 10)


def test_a_timm_checkpoint_loads_with_its_sizes_read_from_the_weights(tmp_path):
    """A ViT saved as timm's train script saves it ({'state_dict': ...}, DataParallel's 'module.' prefix): width,
    depth, patch and image size come from the tensors, the class count from the head."""
    net = build_model("vit_tiny_patch16_224", num_classes=7,
                      arch_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2})
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "arch": "vit"},
               tmp_path / "vit.pth")
    got = load_model("vit_tiny_patch16_224", tmp_path / "vit.pth", input_size=32)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(got(x), net.eval()(x))
    assert len(got.blocks) == 2 and got.patch_embed.patch_size == 8
    with pytest.raises(CheckpointError, match="for 32x32 images .* pass --size 32"):
        load_model("vit_tiny_patch16_224", tmp_path / "vit.pth", input_size=224)


def test_an_older_timm_swin_checkpoint_with_its_buffers_loads(tmp_path):
    """timm < 0.9 saved relative_position_index and attn_mask in the state_dict; they are derived, so dropped."""
    kw = {"img_size": 32, "patch_size": 2, "embed_dim": 24, "depths": (2, 2), "window_size": 4}
    net = build_model("swin_tiny_patch4_window7_224", num_classes=5, arch_kwargs=kw).eval()
    state = dict(net.state_dict())
    for name, buf in net.named_buffers():
        if name.endswith(("relative_position_index", "attn_mask")):
            state[name] = buf
    assert any(k.endswith("attn_mask") for k in state)
    torch.save(state, tmp_path / "swin.pth")
    got = load_model("swin_tiny_patch4_window7_224", tmp_path / "swin.pth", input_size=32)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(got(x), net(x))


def test_shifted_windows_really_shift_and_mask():
    """The shifted block's mask keeps regions that roll brought together from attending to each other."""
    net = build_model("swin_tiny_patch4_window7_224", num_classes=5,
                      arch_kwargs={"img_size": 32, "patch_size": 2, "embed_dim": 24, "depths": (2, 2), "window_size": 4})
    b0, b1 = net.layers[0].blocks
    assert b0.shift == 0 and b0.attn_mask is None and b1.shift == 2
    assert b1.attn_mask.shape == (16, 16, 16) and (b1.attn_mask == -100).any() and (b1.attn_mask[0] == 0).all()


def test_a_wrong_layout_names_the_keys_and_the_architecture(tmp_path):
    torch.save(build_model("resnet50", num_classes=10).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(CheckpointError, match="does not fit architecture 'efficientnet_b0'.*missing"):
        load_model("efficientnet_b0", tmp_path / "r50.pth")


def test_an_architecture_without_weights_says_how_to_get_them():
    with pytest.raises(ConfigError, match="needs --checkpoint: qdeploy downloads no weights.*timm.create_model"):
        SourceConfig(arch="convnext_atto")
    with pytest.raises(ConfigError, match=r"torchvision.models.resnet50\(weights='DEFAULT'\)"):
        SourceConfig(arch="resnet50")


def test_bad_sizes_are_one_clear_error():
    with pytest.raises(ArchitectureError, match="not a multiple of the patch size"):
        build_model("vit_tiny_patch16_224", input_size=30)
    with pytest.raises(ArchitectureError, match="does not tile"):
        build_model("swin_tiny_patch4_window7_224", input_size=200)
