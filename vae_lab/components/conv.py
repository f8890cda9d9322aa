"""Convolutional encoder and decoder for images of any size (``model=conv``).

The data stay flattened, x [..., C*H*W]; the encoder reshapes each datapoint to its image
[C, H, W] (grey images, shape (H, W), have C = 1), so it reads a VampPrior's pseudo-inputs, flat
vectors like the data, as images too. It is the kind of convolutional VAE the flow papers report
on (Kingma et al. 2016, "Improved Variational Inference with Inverse Autoregressive Flow";
van den Berg et al. 2018, "Sylvester Normalizing Flows"; theirs have gated or ResNet blocks):

    encoder  x -> [conv k x k, stride s_l, C_l channels -> act (-> residual block)]_l
               -> flatten -> linear -> act -> h  (feature_dim = ``features``)
    decoder  z -> linear -> act -> linear -> act -> [C_L, H_L, W_L]
               -> [(residual block ->) transposed conv back to the layer's input]_l -> logits

A convolution pads by (k - 1) // 2, so H_l = floor((H_{l-1} + 2p - k) / s_l) + 1 (stride 2
halves 28 to 14 to 7). Each transposed convolution undoes one: its ``output_padding``,
H_{l-1} - ((H_l - 1) s_l - 2p + k), in [0, s_l), restores the size exactly, so any H x W
comes back as itself. The last layer has no activation: it gives the likelihood's parameters.

A residual block (He et al. 2016, pre-activation) maps y to y + conv(act(conv(act(y)))) with
3 x 3 convolutions that keep the channels. Weights start Glorot-normal with the activation's
gain, as the MLP's (``vae_lab.components.networks``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from vae_lab.components.networks import ACTIVATIONS, Networks, glorot, glorot_linear
from vae_lab.config.validation import (
    BOOLEAN,
    POSITIVE_INT,
    ConfigError,
    one_of,
    require,
    require_all,
)


def image_of(data_shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) of a datapoint of shape (H, W) or (C, H, W); other shapes are refused."""
    shape = tuple(int(n) for n in data_shape)
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3:
        return shape
    raise ConfigError(
        f"model=conv needs images, points of shape (H, W) or (C, H, W), but the data's have "
        f"shape {shape}: use model=mlp"
    )


def conv_out(size: int, kernel: int, stride: int) -> int:
    """The output length of a convolution padded by (kernel - 1) // 2."""
    return (size + 2 * ((kernel - 1) // 2) - kernel) // stride + 1


def output_padding(size: int, out: int, kernel: int, stride: int) -> int:
    """The transposed convolution's ``output_padding`` that maps ``out`` back to ``size``."""
    return size - ((out - 1) * stride - 2 * ((kernel - 1) // 2) + kernel)


class ResidualBlock(nn.Module):
    """y -> y + conv(act(conv(act(y)))), 3 x 3 convolutions keeping the channels."""

    def __init__(self, channels: int, activation: str) -> None:
        super().__init__()
        module, gain = ACTIVATIONS[activation]
        self.body = nn.Sequential(
            module(),
            glorot(nn.Conv2d(channels, channels, 3, padding=1), gain),
            module(),
            glorot(nn.Conv2d(channels, channels, 3, padding=1), 1.0),
        )

    def forward(self, y: Tensor) -> Tensor:
        return y + self.body(y)


class ImageEncoder(nn.Module):
    """x [..., C*H*W] -> the convolutional layers on its images -> h [..., feature_dim]."""

    def __init__(self, image: tuple[int, int, int], convs: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.image = image
        self.convs = convs
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        leading = x.shape[:-1]
        y = self.convs(x.reshape(-1, *self.image))
        return self.head(y.flatten(1)).reshape(*leading, -1)


class ImageDecoder(nn.Module):
    """z [..., D] -> dense layers -> a [C_L, H_L, W_L] map -> transposed convolutions ->
    the likelihood's parameters [..., C*H*W]."""

    def __init__(self, stem: nn.Module, top: tuple[int, int, int], deconvs: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.top = top
        self.deconvs = deconvs

    def forward(self, z: Tensor) -> Tensor:
        leading = z.shape[:-1]
        y = self.stem(z.reshape(-1, z.shape[-1])).reshape(-1, *self.top)
        return self.deconvs(y).reshape(*leading, -1)


def encoder_layers(
    image: tuple[int, int, int], channels: list[int], kernel: int, strides: list[int],
    residual: bool, activation: str,
) -> list[nn.Module]:  # fmt: skip
    """The convolutions from the image to the last layer's map."""
    module, gain = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for c_in, c_out, stride in zip([image[0], *channels], channels, strides, strict=False):
        conv = nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2)
        layers += [glorot(conv, gain), module()]
        layers += [ResidualBlock(c_out, activation)] if residual else []
    return layers


def decoder_layers(
    image: tuple[int, int, int], channels: list[int], kernel: int, strides: list[int],
    residual: bool, activation: str, sizes: list[tuple[int, ...]],
) -> list[nn.Module]:  # fmt: skip
    """The transposed convolutions from the last layer's map back to the image's size
    (``sizes``: the map's height and width before each convolution and after the last)."""
    module, gain = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for layer in reversed(range(len(channels))):
        c_in, c_out = channels[layer], channels[layer - 1] if layer else image[0]
        extra = tuple(output_padding(n, m, kernel, strides[layer])
                      for n, m in zip(sizes[layer], sizes[layer + 1], strict=True))  # fmt: skip
        deconv = nn.ConvTranspose2d(c_in, c_out, kernel, strides[layer], (kernel - 1) // 2, extra)
        layers += [ResidualBlock(c_in, activation)] if residual else []
        layers += [glorot(deconv, gain), module()] if layer else [glorot(deconv, 1.0)]
    return layers


def conv_networks(
    data_shape: Sequence[int],
    latent_dim: int,
    channels: Sequence[int] = (32, 64),
    kernel: int = 3,
    strides: Sequence[int] = (2, 2),
    residual: bool = False,
    features: int = 256,
    activation: str = "elu",
) -> Networks:
    """The encoder and decoder of the module docstring for images of ``data_shape``: layer l
    has ``channels[l]`` channels and stride ``strides[l]``, every convolution a ``kernel``
    x ``kernel`` window; ``residual`` adds a residual block after each; the encoder's features
    and the decoder's first layer have ``features`` units."""
    image = image_of(data_shape)
    channels, strides = list(channels), list(strides)
    if len(channels) != len(strides) or not channels:
        raise ConfigError(f"channels={channels} and strides={strides} are invalid: must be lists "
                          "of one length, an entry per convolutional layer")  # fmt: skip
    require_all(POSITIVE_INT, kernel=kernel, features=features)
    for value in channels:
        require("channels", value, POSITIVE_INT)
    for value in strides:
        require("strides", value, POSITIVE_INT)
    require("residual", residual, BOOLEAN)
    require("activation", activation, one_of(*ACTIVATIONS))
    sizes = [image[1:]]
    for stride in strides:
        sizes.append(tuple(conv_out(n, kernel, stride) for n in sizes[-1]))
    if min(sizes[-1]) < 1:
        raise ConfigError(
            f"kernel={kernel} with strides={strides} shrinks the {image[1]}x{image[2]} images "
            "to nothing: use fewer or smaller strides"
        )
    module, gain = ACTIVATIONS[activation]
    top = (channels[-1], *sizes[-1])
    flat = math.prod(top)
    layers = (image, channels, kernel, strides, residual, activation)
    encoder = ImageEncoder(
        image,
        nn.Sequential(*encoder_layers(*layers)),
        nn.Sequential(glorot_linear(flat, features, gain), module()),
    )
    stem = nn.Sequential(glorot_linear(latent_dim, features, gain), module(),
                         glorot_linear(features, flat, gain), module())  # fmt: skip
    decoder = ImageDecoder(stem, top, nn.Sequential(*decoder_layers(*layers, sizes)))
    return Networks(encoder, decoder, feature_dim=features, latent_dim=latent_dim)
