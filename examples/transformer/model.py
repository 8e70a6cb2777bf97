"""A small transformer encoder that classifies sequences of 16 tokens.

    graphc compile examples/transformer/model.py -o out/transformer

Token embedding plus a learned position embedding, two PyTorch-style ``nn.TransformerEncoderLayer``s
(multi-head self-attention and a feed-forward block, each with LayerNorm), mean pooling, a linear head.
"""

import graphc
from graphc import nn

SEQ_LEN = 16
VOCAB = 1000


class TinyEncoder(nn.Module):
    def __init__(self, vocab: int = VOCAB, d_model: int = 64, n_heads: int = 4, n_layers: int = 2,
                 n_classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(0.02 * graphc.randn(1, SEQ_LEN, d_model))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=4 * d_model, dropout=0.0, batch_first=True)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, tokens: graphc.Tensor) -> graphc.Tensor:
        x = self.embed(tokens) + self.pos    # [B, SEQ_LEN, d_model]
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x).mean(dim=1))


graphc.manual_seed(0)
model = TinyEncoder()
example_inputs = (graphc.randint(0, VOCAB, (2, SEQ_LEN)),)
dynamic = {"tokens": {0: "B"}}
