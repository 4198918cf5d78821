"""A real digits classifier with one layer that INT8 cannot take, for the quantization-gate tests.

`build()` trains a small MLP on digits, then rebuilds it so that the classifier's input tensor
also carries an outlier channel a thousand times larger than the rest (a per-channel scale on the
hidden layer's 33rd unit, a copy of its first), multiplied by a zero weight. In float the output is
unchanged; with a per-tensor INT8 scale on that tensor every informative activation rounds to
zero. No Concat joins it (that case edgedl keeps in float up front): only the sensitivity fallback
finds the nodes that touch that tensor (the Mul and `fc2`) and keeps them in float.
"""

import torch
from torch import nn


class Sensitive(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 33)
        self.fc2 = nn.Linear(33, 10)
        scale = torch.ones(33)
        scale[32] = 1000.0
        self.register_buffer("scale", scale)

    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(h * self.scale)


def build():
    from edgedl.data import load_dataset
    from edgedl.train import FitConfig, fit

    torch.manual_seed(0)
    data = load_dataset("digits")
    base = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    fit(base, data.train, data.val, FitConfig(epochs=15, lr=3e-3, seed=0))
    model = Sensitive()
    with torch.no_grad():
        model.fc1.weight[:32] = base[1].weight
        model.fc1.bias[:32] = base[1].bias
        strongest = base[1].weight.norm(dim=1).argmax()
        model.fc1.weight[32] = base[1].weight[strongest]
        model.fc1.bias[32] = base[1].bias[strongest].abs() + 1.0  # on for most inputs: a real outlier
        model.fc2.weight.zero_()
        model.fc2.weight[:, :32] = base[3].weight
        model.fc2.bias.copy_(base[3].bias)
    return model.eval()



def build_rare():
    """A digits MLP whose hidden layer has one more unit, off for all but about one input in a
    hundred and then a thousand times the others (read by a zero weight: the output is the plain
    MLP's). MinMax calibration spends the hidden tensor's INT8 range on those rare spikes and every
    informative activation rounds to zero; an entropy (KL) calibration clips them."""
    from edgedl.data import load_dataset
    from edgedl.train import FitConfig, fit

    torch.manual_seed(0)
    data = load_dataset("digits")
    base = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    fit(base, data.train, data.val, FitConfig(epochs=15, lr=3e-3, seed=0))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 33), nn.ReLU(), nn.Linear(33, 10))
    with torch.no_grad():
        model[1].weight[:32], model[1].bias[:32] = base[1].weight, base[1].bias
        strongest = base[1].weight.norm(dim=1).argmax()
        pre = torch.from_numpy(data.train.x).flatten(1) @ base[1].weight[strongest]
        model[1].weight[32] = 1000 * base[1].weight[strongest]
        model[1].bias[32] = -1000 * torch.quantile(pre, 0.99)  # on for the top 1% of training inputs
        model[3].weight.zero_()
        model[3].weight[:, :32] = base[3].weight
        model[3].bias.copy_(base[3].bias)
    return model.eval()
