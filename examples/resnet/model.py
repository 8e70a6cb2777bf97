"""A small ResNet-style CNN for 32x32 RGB images: convolutions, batch norm, residual adds, global pooling.

    graphc compile examples/resnet/model.py -o out/resnet

Batch norm runs in eval mode (its running statistics), as in any inference graph.
"""

import graphc
from graphc import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut; a strided 1x1 convolution matches shapes when they change."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()  # identity
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: graphc.Tensor) -> graphc.Tensor:
        out = graphc.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return graphc.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(
            BasicBlock(16, 16),             # 16 x 32 x 32
            BasicBlock(16, 32, stride=2),   # 32 x 16 x 16
            BasicBlock(32, 64, stride=2),   # 64 x 8 x 8
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, n_classes)

    def forward(self, x: graphc.Tensor) -> graphc.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(graphc.flatten(self.pool(x), 1))


graphc.manual_seed(0)
model = SmallResNet()
example_inputs = (graphc.randn(2, 3, 32, 32),)
dynamic = {"x": {0: "B"}}
