"""A multi-layer perceptron on flattened 28x28 images: the smallest graphc model file.

    graphc compile examples/mlp/model.py -o out/mlp

The layers and their state_dict names (fc1.weight, fc1.bias, ...) are PyTorch's, so a state_dict saved
from the same model written with torch.nn loads into this one.
"""

import graphc
from graphc import nn


class MLP(nn.Module):
    def __init__(self, d_in: int = 784, hidden: int = 256, n_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, n_classes)

    def forward(self, x: graphc.Tensor) -> graphc.Tensor:
        x = graphc.relu(self.fc1(x))
        x = graphc.relu(self.fc2(x))
        return self.fc3(x)


graphc.manual_seed(0)  # the same random weights every time this file runs
model = MLP()
example_inputs = (graphc.randn(2, 784),)
dynamic = {"x": {0: "B"}}  # the batch size is chosen at run time
