"""A real digits classifier with one layer that INT8 cannot take, for the quantization-gate tests.

`build()` trains a small MLP on digits, then rebuilds it so that the classifier's input tensor
also carries an outlier channel a thousand times larger than the rest, multiplied by a zero
weight. In float the output is unchanged; with a per-tensor INT8 scale on that tensor every
informative activation rounds to zero. Keeping the nodes that touch that tensor (the Concat and
`fc2`) in float fixes it.
"""

import torch
from torch import nn


class Sensitive(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(33, 10)

    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        outlier = 1000.0 * h.sum(1, keepdim=True)
        return self.fc2(torch.cat([h, outlier], 1))


def build():
    from edgedl.data import load_dataset
    from edgedl.train import FitConfig, fit

    torch.manual_seed(0)
    data = load_dataset("digits")
    base = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    fit(base, data.train, data.val, FitConfig(epochs=15, lr=3e-3, seed=0))
    model = Sensitive()
    with torch.no_grad():
        model.fc1.load_state_dict(base[1].state_dict())
        model.fc2.weight.zero_()
        model.fc2.weight[:, :32] = base[3].weight
        model.fc2.bias.copy_(base[3].bias)
    return model.eval()
