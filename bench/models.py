"""The benchmark's models, each written once against a torch-like API (``nn``, ``F``) and built twice:
with graphc.nn / graphc.nn.functional for graphc and with torch.nn / torch.nn.functional for PyTorch
eager and the ONNX export. The torch model's state_dict is loaded into the graphc one, so both hold the
same weights (BatchNorm statistics included).

    spec = MODELS["resnet18"]
    tm = spec.build(torch.nn, torch.nn.functional)          # torch
    gm = spec.build(graphc.nn, graphc.nn.functional)        # graphc (then load tm's state_dict)
    x = spec.inputs(rng)                                    # numpy inputs
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Spec:
    name: str  # table label
    build: Callable[[Any, Any], Any]  # (nn, F) -> module
    inputs: Callable[[np.random.Generator], list[np.ndarray]]
    numpy: bool = False  # a hand-written numpy forward exists (the MLP)


def _act(nn: Any, kind: str) -> Any:
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "gelu": nn.GELU}[kind]()


# ---------------------------------------------------------------------------------------------- MLP, LeNet
def mlp(nn: Any, F: Any) -> Any:
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def lenet(nn: Any, F: Any) -> Any:
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


# ---------------------------------------------------------------------------------------------- ResNet-18
def resnet18(nn: Any, F: Any) -> Any:
    class Basic(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: Any) -> Any:
            y = F.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return F.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
            layers, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers += [Basic(cin, cout, stride), Basic(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, 1000)

        def forward(self, x: Any) -> Any:
            return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))

    return ResNet18()


# ---------------------------------------------------------------------------------------------- MobileNetV2
def mobilenet_v2(nn: Any, F: Any) -> Any:
    def cbr(cin: int, cout: int, k: int, s: int, groups: int = 1, act: bool = True) -> list:
        return [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                *([nn.ReLU6()] if act else [])]

    class Inverted(nn.Module):
        def __init__(self, cin: int, cout: int, s: int, t: int) -> None:
            super().__init__()
            hid = cin * t
            self.res = s == 1 and cin == cout
            self.body = nn.Sequential(*([] if t == 1 else cbr(cin, hid, 1, 1)), *cbr(hid, hid, 3, s, hid),
                                      *cbr(hid, cout, 1, 1, act=False))

        def forward(self, x: Any) -> Any:
            return x + self.body(x) if self.res else self.body(x)

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers, cin = cbr(3, 32, 3, 2), 32
            for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                               (6, 160, 3, 2), (6, 320, 1, 1)):
                for i in range(n):
                    layers.append(Inverted(cin, c, s if i == 0 else 1, t))
                    cin = c
            layers += cbr(cin, 1280, 1, 1)
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(1280, 1000)

        def forward(self, x: Any) -> Any:
            return self.fc(self.pool(self.features(x)).flatten(1))

    return MobileNetV2()


# ---------------------------------------------------------------------------------------------- EfficientNet-B0
def efficientnet_b0(nn: Any, F: Any) -> Any:
    class MBConv(nn.Module):
        def __init__(self, cin: int, cout: int, k: int, s: int, t: int) -> None:
            super().__init__()
            hid = cin * t
            self.res = s == 1 and cin == cout
            self.expand = None if t == 1 else nn.Sequential(nn.Conv2d(cin, hid, 1, bias=False),
                                                            nn.BatchNorm2d(hid), nn.SiLU())
            self.dw = nn.Sequential(nn.Conv2d(hid, hid, k, s, k // 2, groups=hid, bias=False), nn.BatchNorm2d(hid),
                                    nn.SiLU())
            sq = max(1, cin // 4)
            self.se1 = nn.Conv2d(hid, sq, 1)
            self.se2 = nn.Conv2d(sq, hid, 1)
            self.project = nn.Sequential(nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: Any) -> Any:
            h = x if self.expand is None else self.expand(x)
            h = self.dw(h)
            s = F.adaptive_avg_pool2d(h, 1)
            h = h * F.sigmoid(self.se2(F.silu(self.se1(s))))
            h = self.project(h)
            return x + h if self.res else h

    class EfficientNetB0(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.SiLU()]
            cin = 32
            for t, k, s, c, n in ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                                  (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)):
                for i in range(n):
                    layers.append(MBConv(cin, c, k, s if i == 0 else 1, t))
                    cin = c
            layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.SiLU()]
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(1280, 1000)

        def forward(self, x: Any) -> Any:
            return self.fc(self.pool(self.features(x)).flatten(1))

    return EfficientNetB0()


# ---------------------------------------------------------------------------------------------- ConvNeXt-T
def convnext_t(nn: Any, F: Any) -> Any:
    class Block(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.dw = nn.Conv2d(d, d, 7, padding=3, groups=d)
            self.norm = nn.LayerNorm(d, eps=1e-6)
            self.fc1 = nn.Linear(d, 4 * d)
            self.fc2 = nn.Linear(4 * d, d)

        def forward(self, x: Any) -> Any:
            h = self.dw(x).permute(0, 2, 3, 1)  # channels last
            h = self.fc2(F.gelu(self.fc1(self.norm(h))))
            return x + h.permute(0, 3, 1, 2)

    class LN2d(nn.Module):  # LayerNorm over the channels of an NCHW tensor
        def __init__(self, d: int) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(d, eps=1e-6)

        def forward(self, x: Any) -> Any:
            return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    class ConvNeXtT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            dims, depths = (96, 192, 384, 768), (3, 3, 9, 3)
            layers = [nn.Conv2d(3, dims[0], 4, 4), LN2d(dims[0])]
            for i, (d, n) in enumerate(zip(dims, depths)):
                if i:
                    layers += [LN2d(dims[i - 1]), nn.Conv2d(dims[i - 1], d, 2, 2)]
                layers += [Block(d) for _ in range(n)]
            self.features = nn.Sequential(*layers)
            self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
            self.fc = nn.Linear(dims[-1], 1000)

        def forward(self, x: Any) -> Any:
            return self.fc(self.norm(self.features(x).mean((2, 3))))

    return ConvNeXtT()


# ---------------------------------------------------------------------------------------------- transformers
def _block_classes(nn: Any, F: Any) -> tuple[Any, Any]:
    """Multi-head self-attention written out (qkv projection, SDPA, output projection) and a transformer
    block around it, so graphc and torch run the same ops (no fused torch fast path)."""

    class SelfAttention(nn.Module):
        def __init__(self, d: int, heads: int, causal: bool) -> None:
            super().__init__()
            self.heads, self.causal = heads, causal
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)

        def forward(self, x: Any) -> Any:
            b, t, d = x.shape
            qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=self.causal)
            return self.proj(y.transpose(1, 2).reshape(b, t, d))

    class Block(nn.Module):
        """pre_norm: x + attn(ln(x)), x + mlp(ln(x)) (ViT, GPT); else post-norm (BERT)."""

        def __init__(self, d: int, heads: int, ffn: int, pre_norm: bool, causal: bool = False) -> None:
            super().__init__()
            self.pre_norm = pre_norm
            self.ln1 = nn.LayerNorm(d)
            self.attn = SelfAttention(d, heads, causal)
            self.ln2 = nn.LayerNorm(d)
            self.fc1 = nn.Linear(d, ffn)
            self.fc2 = nn.Linear(ffn, d)

        def forward(self, x: Any) -> Any:
            if self.pre_norm:
                x = x + self.attn(self.ln1(x))
                return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
            x = self.ln1(x + self.attn(x))
            return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))

    return SelfAttention, Block


def bert_layers(n: int) -> Callable[[Any, Any], Any]:
    def build(nn: Any, F: Any) -> Any:
        _, Block = _block_classes(nn, F)
        return nn.Sequential(*[Block(384, 12, 1536, pre_norm=False) for _ in range(n)])

    return build


def vit_s16(nn: Any, F: Any) -> Any:
    _, Block = _block_classes(nn, F)

    class ViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 384, 16, 16)
            self.pos = nn.Embedding(196, 384)  # learned position embedding (no class token: mean pooling)
            self.blocks = nn.Sequential(*[Block(384, 6, 1536, pre_norm=True) for _ in range(12)])
            self.norm = nn.LayerNorm(384)
            self.head = nn.Linear(384, 1000)

        def forward(self, x: Any, pos: Any) -> Any:
            h = self.patch(x).flatten(2).transpose(1, 2) + self.pos(pos)
            h = self.norm(self.blocks(h))
            return self.head(h.mean(1))

    return ViT()


def gpt_small(nn: Any, F: Any) -> Any:
    _, Block = _block_classes(nn, F)

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(4096, 384)
            self.pos = nn.Embedding(64, 384)
            self.blocks = nn.Sequential(*[Block(384, 6, 1536, pre_norm=True, causal=True) for _ in range(6)])
            self.norm = nn.LayerNorm(384)
            self.head = nn.Linear(384, 4096, bias=False)

        def forward(self, ids: Any, pos: Any) -> Any:
            return self.head(self.norm(self.blocks(self.tok(ids) + self.pos(pos))))

    return GPT()


def _img(c: int, s: int, b: int = 1) -> Callable[[np.random.Generator], list[np.ndarray]]:
    return lambda rng: [rng.standard_normal((b, c, s, s)).astype(np.float32)]


MODELS: dict[str, Spec] = {s.name: s for s in [
    Spec("mlp_b1", mlp, lambda rng: [rng.standard_normal((1, 784)).astype(np.float32)], numpy=True),
    Spec("mlp_b64", mlp, lambda rng: [rng.standard_normal((64, 784)).astype(np.float32)], numpy=True),
    Spec("lenet", lenet, _img(1, 28)),
    Spec("resnet18", resnet18, _img(3, 224)),
    Spec("mobilenet_v2", mobilenet_v2, _img(3, 224)),
    Spec("efficientnet_b0", efficientnet_b0, _img(3, 224)),
    Spec("convnext_t", convnext_t, _img(3, 224)),
    Spec("vit_s16", vit_s16, lambda rng: [rng.standard_normal((1, 3, 224, 224)).astype(np.float32),
                                         np.arange(196, dtype=np.int64)[None]]),
    Spec("bert_layer", bert_layers(1), lambda rng: [rng.standard_normal((1, 128, 384)).astype(np.float32)]),
    Spec("bert_6layers", bert_layers(6), lambda rng: [rng.standard_normal((1, 128, 384)).astype(np.float32)]),
    Spec("gpt_t64", gpt_small, lambda rng: [rng.integers(0, 4096, (1, 64)).astype(np.int64),
                                            np.arange(64, dtype=np.int64)[None]]),
]}
