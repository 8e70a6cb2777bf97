"""The digits demo's classifier: 8x8 grey images of handwritten digits -> 10 logits.

    graphc compile examples/digits/model.py -o out/digits

``DigitsNet`` mirrors the PyTorch model in ``train.py`` line for line, so the weights trained there
(``digits.safetensors``, committed) load into it with ``load_state_dict``. ``demo.py`` compiles it and
checks that the C library classifies the test set exactly as eager execution does.
"""

import graphc
from graphc import nn


class DigitsNet(nn.Module):
    """[B, 1, 8, 8] images -> [B, 10] logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),   # 16 x 4 x 4
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 2 x 2
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 2 * 2, 10))

    def forward(self, x: graphc.Tensor) -> graphc.Tensor:
        return self.classifier(self.features(x))


model = DigitsNet()
example_inputs = (graphc.zeros(1, 1, 8, 8),)
dynamic = {"x": {0: graphc.Dim("B", max=512)}}  # the whole 360-image test set fits in one call
weights = "digits.safetensors"
