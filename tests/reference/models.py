"""The seed's SimpleCNN family in PyTorch, returning logits, with the same state_dict keys as whitebox.

Used only to produce reference outputs (goldens) from Captum; whitebox itself never runs Python.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ChannelAttention(nn.Module):
    def __init__(self, c, reduction=16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(c, c // reduction), nn.ReLU(), nn.Linear(c // reduction, c))

    def forward(self, x):
        avg = F.avg_pool2d(x, x.shape[2:]).flatten(1)
        mx = F.max_pool2d(x, x.shape[2:]).flatten(1)
        gate = torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        return x * gate[:, :, None, None]


class SpatialAttention(nn.Module):
    def __init__(self, k=7):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(2, 1, k, padding=(k - 1) // 2), nn.BatchNorm2d(1), nn.ReLU())

    def forward(self, x):
        pooled = torch.cat((x.max(1)[0].unsqueeze(1), x.mean(1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.conv_block(pooled))


class CBAM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.CA = ChannelAttention(c)
        self.SA = SpatialAttention()

    def forward(self, x):
        return self.SA(self.CA(x))


class CAMHead(nn.Module):
    def __init__(self, c, classes):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(c, classes))

    def forward(self, x):
        return self.mlp(F.avg_pool2d(x, x.shape[2:]).flatten(1))


class SimpleCNN(nn.Module):
    def __init__(self, dataset="mnist", arch="simple-cnn"):
        super().__init__()
        self.arch = arch
        in_c, side = (1, 28) if dataset == "mnist" else (3, 32)
        layers, c_prev = [], in_c
        for c in (32, 64, 128):
            layers += [nn.Conv2d(c_prev, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2, 2)]
            c_prev = c
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(128 * (side // 8) ** 2, 1024), nn.ReLU(), nn.Linear(1024, 10))
        if arch == "cbam":
            for i, c in enumerate((32, 64, 128)):
                setattr(self, f"cbam{i}", CBAM(c))
        if arch in ("cam", "cbam"):
            self.cam_mlp = CAMHead(128, 10)

    def forward(self, x):
        block = 0
        for layer in self.features:
            if isinstance(layer, nn.BatchNorm2d) and self.arch == "cbam":
                x = getattr(self, f"cbam{block}")(x)
                block += 1
            x = layer(x)
        if self.arch == "cam":
            return self.cam_mlp(x)
        return self.classifier(x.flatten(1))


def load_whitebox(path, dataset, arch):
    """A model with the weights of a whitebox checkpoint (safetensors, any float type)."""
    from safetensors.torch import load_file

    state = {k: v.float() for k, v in load_file(path).items()}
    model = SimpleCNN(dataset, arch)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all(k.endswith("num_batches_tracked") for k in missing), missing
    return model.eval()
