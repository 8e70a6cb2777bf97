"""Train the digits demo's classifier with PyTorch and save its weights for graphc.

    python examples/digits/train.py        # needs torch, safetensors and scikit-learn

``DigitsNet`` below is written with ``torch.nn`` and mirrors ``model.py`` (written with
``graphc.nn``) line for line, so both have the same state_dict keys and ``digits.safetensors``
loads into either. Training is seeded (the same file comes out every run) and takes ~15 s on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "digits.safetensors"


class DigitsNet(nn.Module):
    """[B, 1, 8, 8] images -> [B, 10] logits (the twin of model.py's DigitsNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),   # 16 x 4 x 4
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 2 x 2
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 2 * 2, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def main(epochs: int = 40, batch: int = 64, seed: int = 0) -> None:
    from make_data import load_split  # scikit-learn: needed to train, not to import DigitsNet
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    x_train, y_train, x_test, y_test = load_split()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    model = DigitsNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(yt), generator=gen).split(batch):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        sched.step()
        if epoch % 10 == 9 or epoch == epochs - 1:
            print(f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  test accuracy {accuracy(model, x_test, y_test):.4f}")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, WEIGHTS)
    print(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size} bytes, {len(state)} tensors); "
          f"test accuracy {accuracy(model, x_test, y_test):.4f} on {len(y_test)} images")


if __name__ == "__main__":
    main()
