"""timm's VisionTransformer (timm/models/vision_transformer.py: ViT-Tiny/Small, DeiT-Tiny), ConvNeXt
(convnext.py: Atto/Femto, conv_mlp) and Swin (swin_transformer.py, timm >= 0.9 layout: channels-last stages, the
patch merging at the start of stages 2-4), with timm's module names. Attention is written out (MatMul, Softmax)
rather than fused, so that the exported graph shows what the quantizer sees."""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import LayerNorm2d, Mlp, to_2tuple


# -- ViT
class Attention(nn.Module):
    """timm Attention: qkv (one Linear), scaled dot product per head, proj."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding width {dim} is not a multiple of {heads} heads")
        self.num_heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x, bias=None):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if bias is not None:
            attn = attn + bias
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, dim: int):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"image size {img_size} is not a multiple of the patch size {patch_size}")
        self.img_size, self.patch_size = img_size, patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """cls_token, pos_embed, patch_embed.proj, blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2},
    norm, head; class-token pooling."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, embed_dim: int = 192, depth: int = 12,
                 num_heads: int = 3, mlp_ratio: float = 4.0, num_classes: int = 1000):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.patch_embed.num_patches + 1, embed_dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        self.input_size = img_size
        nn.init.trunc_normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit_state_kwargs(state: dict) -> dict:
    """img_size, patch_size, embed_dim and depth as the checkpoint has them (the head count is the name's)."""
    w, pos = state.get("patch_embed.proj.weight"), state.get("pos_embed")
    if w is None or pos is None:
        return {}
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    return {"patch_size": int(w.shape[-1]), "img_size": grid * int(w.shape[-1]), "embed_dim": int(w.shape[0]),
            "depth": depth}


def vit_tiny_patch16_224(num_classes: int = 1000, **kw) -> VisionTransformer:
    return VisionTransformer(**{"embed_dim": 192, "depth": 12, "num_heads": 3, **kw}, num_classes=num_classes)


def vit_small_patch16_224(num_classes: int = 1000, **kw) -> VisionTransformer:
    return VisionTransformer(**{"embed_dim": 384, "depth": 12, "num_heads": 6, **kw}, num_classes=num_classes)


# -- ConvNeXt
class ConvNeXtBlock(nn.Module):
    """conv_dw (7x7 depthwise), norm, mlp (fc1, GELU, fc2), gamma (layer scale), residual."""

    def __init__(self, dim: int, conv_mlp: bool):
        super().__init__()
        self.conv_mlp = conv_mlp
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim) if conv_mlp else nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim, conv=conv_mlp)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x):
        y = self.conv_dw(x)
        if self.conv_mlp:
            y = self.mlp(self.norm(y))
        else:
            y = self.mlp(self.norm(y.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return x + y * self.gamma.reshape(1, -1, 1, 1)


class ConvNeXtStage(nn.Module):
    def __init__(self, cin: int, cout: int, depth: int, conv_mlp: bool):
        super().__init__()
        self.downsample = (nn.Sequential(LayerNorm2d(cin), nn.Conv2d(cin, cout, 2, 2)) if cin != cout
                           else nn.Identity())
        self.blocks = nn.Sequential(*[ConvNeXtBlock(cout, conv_mlp) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class ClassifierHead(nn.Module):
    """timm NormMlpClassifierHead without hidden layer: average pool, norm, fc."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm, self.fc = LayerNorm2d(dim), nn.Linear(dim, num_classes)

    def forward(self, x):
        return self.fc(self.norm(x.mean((2, 3), keepdim=True)).flatten(1))


class ConvNeXt(nn.Module):
    """stem (4x4 patchify conv, LayerNorm2d), stages.N.{downsample, blocks}, head.{norm, fc}."""

    def __init__(self, depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), conv_mlp: bool = True, num_classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0]))
        cins = (dims[0],) + tuple(dims[:-1])
        self.stages = nn.Sequential(*[ConvNeXtStage(a, b, d, conv_mlp) for a, b, d in zip(cins, dims, depths)])
        self.head = ClassifierHead(dims[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


def convnext_atto(num_classes: int = 1000) -> ConvNeXt:
    return ConvNeXt((2, 2, 6, 2), (40, 80, 160, 320), True, num_classes)


def convnext_femto(num_classes: int = 1000) -> ConvNeXt:
    return ConvNeXt((2, 2, 6, 2), (48, 96, 192, 384), True, num_classes)


def convnext_tiny(num_classes: int = 1000) -> ConvNeXt:
    return ConvNeXt((3, 3, 9, 3), (96, 192, 384, 768), False, num_classes)


# -- Swin
def window_partition(x, ws: int):
    b, h, w, c = x.shape
    return x.reshape(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)


def window_reverse(windows, ws: int, h: int, w: int):
    c = windows.shape[-1]
    return windows.reshape(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def relative_position_index(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


class WindowAttention(Attention):
    """qkv, proj, relative_position_bias_table ((2w-1)^2 x heads); the index is a non-persistent buffer."""

    def __init__(self, dim: int, heads: int, ws: int):
        super().__init__(dim, heads)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(ws).flatten(), persistent=False)
        self.n = ws * ws

    def bias(self):
        table = self.relative_position_bias_table[self.relative_position_index]
        return table.reshape(self.n, self.n, -1).permute(2, 0, 1).unsqueeze(0)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, resolution: tuple[int, int], ws: int, shift: int):
        super().__init__()
        if min(resolution) <= ws:  # timm: a window that covers the map is neither shifted nor split
            ws, shift = min(resolution), 0
        self.ws, self.shift, self.resolution = ws, shift, resolution
        self.norm1, self.attn = nn.LayerNorm(dim), WindowAttention(dim, heads, ws)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, 4 * dim)
        self.register_buffer("attn_mask", self._mask() if shift else None, persistent=False)

    def _mask(self):
        h, w = self.resolution
        img = torch.zeros(1, h, w, 1)
        cnt = 0
        for hs in (slice(0, -self.ws), slice(-self.ws, -self.shift), slice(-self.shift, None)):
            for wsl in (slice(0, -self.ws), slice(-self.ws, -self.shift), slice(-self.shift, None)):
                img[:, hs, wsl, :] = cnt
                cnt += 1
        win = window_partition(img, self.ws).squeeze(-1)
        mask = win.unsqueeze(1) - win.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

    def forward(self, x):
        b, h, w, c = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        win = window_partition(y, self.ws)
        bias = self.attn.bias()
        if self.attn_mask is not None:
            nw = self.attn_mask.shape[0]
            bias = (bias + self.attn_mask.unsqueeze(1)).repeat(b, 1, 1, 1).reshape(b * nw, -1, self.ws ** 2,
                                                                                   self.ws ** 2)
        y = window_reverse(self.attn(win, bias), self.ws, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm, self.reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, resolution: tuple[int, int], ws: int, merge: bool):
        super().__init__()
        self.downsample = PatchMerging(dim // 2) if merge else nn.Identity()
        self.blocks = nn.Sequential(*[SwinBlock(dim, heads, resolution, ws, 0 if i % 2 == 0 else ws // 2)
                                      for i in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class SwinPatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj, self.norm = nn.Conv2d(3, dim, patch, patch), nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinHead(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x):
        return self.fc(x.mean((1, 2)))


class SwinTransformer(nn.Module):
    """patch_embed.{proj, norm}, layers.N.{downsample (N > 0), blocks.M.{norm1, attn, norm2, mlp}}, norm, head.fc.
    Older timm checkpoints' relative_position_index / attn_mask buffers are dropped on load (they are recomputed)."""

    def __init__(self, img_size=224, patch_size=4, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                 window_size=7, num_classes: int = 1000):
        super().__init__()
        self.patch_embed = SwinPatchEmbed(patch_size, embed_dim)
        res = [s // patch_size for s in to_2tuple(img_size)]
        stages = []
        for i, (d, h) in enumerate(zip(depths, num_heads)):
            dim = embed_dim * 2 ** i
            r = (res[0] // 2 ** i, res[1] // 2 ** i)
            if r[0] % min(window_size, r[0]) or r[1] % min(window_size, r[1]):
                raise ValueError(f"stage {i + 1} map {r[0]}x{r[1]} does not tile into {window_size}x{window_size} "
                                 "windows; pick img_size / window_size that divide")
            stages.append(SwinStage(dim, d, h, r, window_size, i > 0))
        self.layers = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(embed_dim * 2 ** (len(depths) - 1))
        self.head = SwinHead(embed_dim * 2 ** (len(depths) - 1), num_classes)
        self.input_size = img_size
        self._register_load_state_dict_pre_hook(_drop_derived_buffers)

    def forward(self, x):
        return self.head(self.norm(self.layers(self.patch_embed(x))))


def _drop_derived_buffers(state, prefix, *_):
    for k in [k for k in state if k.startswith(prefix) and k.endswith(("relative_position_index", "attn_mask"))]:
        del state[k]


def swin_state_kwargs(state: dict) -> dict:
    """patch_size, embed_dim, depths and window_size as the checkpoint has them (heads and image size are not
    in a state_dict: the name's heads, the run's --size)."""
    w = state.get("patch_embed.proj.weight")
    if w is None:
        return {}
    stages = sorted({int(k.split(".")[1]) for k in state if k.startswith("layers.")})
    depths = tuple(len({k.split(".")[3] for k in state if k.startswith(f"layers.{i}.blocks.")}) for i in stages)
    table = state.get("layers.0.blocks.0.attn.relative_position_bias_table")
    kw = {"patch_size": int(w.shape[-1]), "embed_dim": int(w.shape[0]), "depths": depths}
    if table is not None:
        kw["window_size"] = (int(round(table.shape[0] ** 0.5)) + 1) // 2
    return kw


def swin_tiny_patch4_window7_224(num_classes: int = 1000, **kw) -> SwinTransformer:
    heads = kw.pop("num_heads", None) or tuple(3 * 2 ** i for i in range(len(kw.get("depths", (2, 2, 6, 2)))))
    return SwinTransformer(**kw, num_heads=heads, num_classes=num_classes)


TIMM_ARCHITECTURES = {
    "vit_tiny_patch16_224": vit_tiny_patch16_224,
    "deit_tiny_patch16_224": vit_tiny_patch16_224,
    "vit_small_patch16_224": vit_small_patch16_224,
    "convnext_atto": convnext_atto,
    "convnext_femto": convnext_femto,
    "convnext_tiny": convnext_tiny,
    "swin_tiny_patch4_window7_224": swin_tiny_patch4_window7_224,
}

# architecture -> what its checkpoint says about the constructor's arguments (beyond the class count)
STATE_KWARGS = {"vit_tiny_patch16_224": vit_state_kwargs, "deit_tiny_patch16_224": vit_state_kwargs,
                "vit_small_patch16_224": vit_state_kwargs, "swin_tiny_patch4_window7_224": swin_state_kwargs}
# architectures whose constructor takes the input size (a transformer's positions and windows depend on it)
SIZED = ("vit_tiny_patch16_224", "deit_tiny_patch16_224", "vit_small_patch16_224", "swin_tiny_patch4_window7_224")
