"""RED-Net (Mao, Shen, Yang 2016): a symmetric convolution / deconvolution network with skip connections.

`depth` layers, half 3x3 convolutions (the encoder) and half 3x3 transposed convolutions ("deconvolutions", the
decoder), all stride 1 and no pooling (pooling throws away the detail a denoiser must keep), so the size never
changes and any input size works without padding. Number the feature maps p_0 (the input) to p_n (the encoder's
last, n = depth / 2); the decoder walks back from q_{n-1} to q_0, its layer k making q_k, the mirror of p_k.
Every two layers counted from the input, at k = 2, 4, ... < n, the encoder's p_k is added to the decoder's q_k
before the ReLU (the paper's element-wise sum then rectification): these skips pass detail past the middle layers
and give the gradient a short path back, which is what lets the deep versions train. The skip at k = 0 is the
input itself: the final deconvolution predicts a correction (minus the noise) and the network returns input +
correction, linear (no ReLU: whoever shows or scores the output clips it), so the network learns only what to
change, and the noisy input, not a grey image, is what it improves on.

Default configuration: RED-Net-10 (5 + 5 layers), 64 channels, skips at k = 2 and 4 and the input, biases
everywhere: 296,641 parameters for grey and 298,947 for colour. RED-Net-20 is `REDNet(depth=20)`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bdn.models.layers import conv
from bdn.models.registry import register_model


class REDNet(nn.Module):
    def __init__(self, channels: int = 1, depth: int = 10, features: int = 64) -> None:
        super().__init__()
        if depth < 2 or depth % 2:
            raise ValueError(f"RED-Net depth must be even and at least 2, got {depth}")
        self.channels, self.bias_free, self.depth = channels, False, depth
        half = depth // 2
        self.encoder = nn.ModuleList(
            conv(channels if k == 0 else features, features, 3, bias=True) for k in range(half)
        )
        # decoder[j] makes q_{half-1-j}: the last one returns to the image's channels
        self.decoder = nn.ModuleList(
            nn.ConvTranspose2d(features, channels if k == 0 else features, 3, padding=1) for k in reversed(range(half))
        )
        self.skips = tuple(range(2, half, 2))  # k with p_k added to q_k (k = 0, the input, is the residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]  # p_0 .. p_n
        for layer in self.encoder:
            features.append(F.relu(layer(features[-1])))
        h = features.pop()
        for k, layer in zip(reversed(range(len(self.decoder))), self.decoder, strict=True):  # k = n-1 .. 0
            h = layer(h)
            if k > 0:
                h = F.relu(h + features[k]) if k in self.skips else F.relu(h)
        return x + h


@register_model(
    "rednet",
    bias_free=False,
    reach=10,  # how far an input pixel can change the output (tile overlap): 1 pixel a 3x3 layer, 10 layers
    shipped=("colour",),  # no stride: no padding, any tile grid (multiple 1)
    summary="RED-Net-10 (Mao et al. 2016): conv/deconv x 64, symmetric skips every 2",
)
def builder(channels: int) -> nn.Module:
    """The registry's `rednet`: RED-Net-10, 64 channels, residual output."""
    return REDNet(channels)
