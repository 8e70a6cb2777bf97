"""An MLP whose hidden layers carry two LoRA adapters, one active, merged into the base weights for compiling.

    graphc compile examples/lora/model.py -o out/lora

``LoraLinear`` follows Hugging Face PEFT's layout (``fc1.base_layer.weight``, ``fc1.lora_A.sales.weight``,
``fc1.lora_B.sales.weight``, ...), so PEFT-style checkpoints load with ``load_state_dict``. ``merge()``
folds the active adapter's update ``scaling * B @ A`` into the base weight: the merged model computes the
same function as the unmerged one, and its compiled graph is a plain MLP with no extra matmuls.
"""

import graphc
from graphc import nn
from graphc.nn.lora import LoraLinear

ADAPTERS = ("support", "sales")


class LoraMLP(nn.Module):
    def __init__(self, d_in: int = 128, hidden: int = 128, n_classes: int = 8, r: int = 4) -> None:
        super().__init__()
        self.fc1 = LoraLinear((d_in, hidden), r=r, lora_alpha=2 * r, adapter_name=ADAPTERS[0])
        self.fc2 = LoraLinear((hidden, hidden), r=r, lora_alpha=2 * r, adapter_name=ADAPTERS[0])
        for layer in (self.fc1, self.fc2):
            layer.add_adapter(ADAPTERS[1], r=r, lora_alpha=2 * r)
        self.head = nn.Linear(hidden, n_classes)

    def lora_layers(self) -> list[LoraLinear]:
        return [m for m in self.modules() if isinstance(m, LoraLinear)]

    def set_adapter(self, name: str) -> None:
        for layer in self.lora_layers():
            layer.set_adapter(name)

    def merge(self) -> None:
        for layer in self.lora_layers():
            layer.merge()  # the active adapter

    def forward(self, x: graphc.Tensor) -> graphc.Tensor:
        x = graphc.relu(self.fc1(x))
        x = graphc.relu(self.fc2(x))
        return self.head(x)


def build(adapter: str = "sales", merge: bool = True) -> LoraMLP:
    graphc.manual_seed(0)
    net = LoraMLP()
    # a new adapter starts with B = 0 (no effect); stand-in "fine-tuned" values make each one matter
    for layer in net.lora_layers():
        for name in ADAPTERS:
            nn.init.normal_(layer.lora_B[name].weight, std=0.05)
    net.set_adapter(adapter)
    if merge:
        net.merge()
    return net


model = build  # a function returning the module: graphc compiles the merged "sales" model
example_inputs = (graphc.randn(2, 128),)
dynamic = {"x": {0: "B"}}
