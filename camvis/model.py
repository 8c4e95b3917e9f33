"""MultiMagnificationNet: camvis2's multi-magnification CNN and its eight variants.

Module names follow camvis2's model/model.py exactly (`encoder`, `conv_block1`..., `classifier`,
`fc1`, `batchnorm`, `fc2`), so a state_dict trained by camvis2 loads here unchanged and the
other way round (patch size 128: seven blocks, as camvis2 hard-codes).

Two camvis2 defects are not reproduced:
- the aligned model wrote each level into a tensor autograd had saved, so fp32 backward
  failed (it only worked under fp16 autocast, where the conv saw a cast copy); here aligned
  inputs are built with torch.cat / F.pad, no in-place writes;
- it padded an aligned encoding by size_hidden // 4 instead of patch_size // 4, which only
  aligns when size_hidden == patch_size; here a one-block encoding (P/2 x P/2, the central half
  of the next level's field of view) goes to offset P/4 of a P x P zero canvas.
"""

from __future__ import annotations

import copy
import difflib
import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from camvis.bounds import patch_size_problem
from camvis.config import JobConfig
from camvis.errors import ConfigError

NUM_CHANNELS = 4
"""Input channels per level: R, G, B, log-depth."""
LEAKY_SLOPE = 0.1
DROPOUT = 0.5


class MLP(nn.Module):
    """camvis2's classifier head: Linear -> LeakyReLU -> BatchNorm1d -> Dropout -> Linear."""

    def __init__(self, size_in: int, size_out: int, hidden_size: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(size_in, hidden_size)
        self.fc2 = nn.Linear(hidden_size, size_out)
        self.activation = nn.LeakyReLU(negative_slope=LEAKY_SLOPE)
        self.batchnorm = nn.BatchNorm1d(num_features=hidden_size)
        self.dropout = nn.Dropout(p=DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.batchnorm(self.activation(self.fc1(x)))))


class ConvBlock(nn.Module):
    """Conv 3x3 (same) -> BatchNorm2d -> LeakyReLU 0.1 -> Dropout2d 0.5 -> MaxPool 2.

    An input with fewer channels than the conv expects stands for one whose remaining channels
    are zero (the first aligned level has no previous encoding yet): only the matching slice of
    the weight is applied. Output and gradients are those of the zero-filled input (the unused
    slice gets zero gradient), without the FLOPs of convolving zeros.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding="same")
        self.batchnorm = nn.BatchNorm2d(num_features=out_channels)
        self.leakyrelu = nn.LeakyReLU(negative_slope=LEAKY_SLOPE)
        self.dropout = nn.Dropout2d(p=DROPOUT)
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if x.shape[1] < conv.in_channels:
            y = F.conv2d(x, conv.weight[:, : x.shape[1]], conv.bias, padding=conv.padding)
        else:
            y = conv(x)
        return self.maxpool(self.dropout(self.leakyrelu(self.batchnorm(y))))


class ConvEncoder(nn.Module):
    """`num_blocks` ConvBlocks named conv_block1..conv_blockN (camvis2: N = 7 for 128 px)."""

    def __init__(self, size_in: int, size_out: int, num_blocks: int = 7) -> None:
        super().__init__()
        for k in range(1, num_blocks + 1):
            self.add_module(f"conv_block{k}", ConvBlock(size_in if k == 1 else size_out, size_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            x = block(x)
        return x


def num_blocks_for(patch_size: int) -> int:
    """log2(patch_size): the blocks that take a P x P patch down to 1 x 1."""
    problem = patch_size_problem(patch_size)
    if problem is not None:
        raise ValueError(problem)
    return patch_size.bit_length() - 1


class MultiMagnificationNet(nn.Module):
    """Concentric patches at `num_levels` magnifications -> one visibility logit per sample.

    cat (align_features=False): every level is encoded down to 1 x 1 on its own (shared or
    per-level encoder); the encodings are concatenated for the classifier.
    align (align_features=True): level i's input is its C channels stacked with the previous
    level's one-block encoding, zero-padded back to P x P at the centre; the last level runs
    the full encoder and only its encoding is classified. As in camvis2, every aligned conv
    expects C + size_hidden input channels, the first level included (its encoding part is
    zero). With shared weights the per-level step reuses encoder.conv_block1 (camvis2 does).

    Input (B, num_levels * num_channels, P, P), level-major; output logits (B,).
    """

    def __init__(self, num_levels: int, num_channels: int = NUM_CHANNELS, size_hidden: int = 128,
                 share_weights: bool = False, use_mlp: bool = False, align_features: bool = False,
                 patch_size: int = 128) -> None:
        super().__init__()
        for name, value in (("num_levels", num_levels), ("num_channels", num_channels),
                            ("size_hidden", size_hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.num_blocks = num_blocks_for(patch_size)
        self.num_levels = num_levels
        self.num_channels = num_channels
        self.size_hidden = size_hidden
        self.share_weights = share_weights
        self.use_mlp = use_mlp
        self.align_features = align_features
        self.patch_size = patch_size
        self.encoder = self._make_encoder()
        self.classifier = self._make_classifier()

    def hparams(self) -> dict[str, Any]:
        """The constructor arguments (to rebuild the same architecture)."""
        return {k: getattr(self, k) for k in ("num_levels", "num_channels", "size_hidden",
                                               "share_weights", "use_mlp", "align_features", "patch_size")}

    def _make_encoder(self) -> nn.Module:
        c, h, n = self.num_channels, self.size_hidden, self.num_blocks
        size_in = c + h if self.align_features else c
        if self.share_weights:
            return ConvEncoder(size_in, h, n)
        if self.align_features:  # one alignment block per level but the last, then a full encoder
            blocks: list[nn.Module] = [ConvBlock(size_in, h) for _ in range(self.num_levels - 1)]
            return nn.ModuleList([*blocks, ConvEncoder(size_in, h, n)])
        return nn.ModuleList([ConvEncoder(size_in, h, n) for _ in range(self.num_levels)])

    def _make_classifier(self) -> nn.Module:
        size_in = self.size_hidden if self.align_features else self.num_levels * self.size_hidden
        if self.use_mlp:
            return MLP(size_in, 1, self.size_hidden)
        return nn.Conv2d(size_in, 1, kernel_size=1)

    def _level_encoder(self, i: int) -> nn.Module:
        return self.encoder if self.share_weights else self.encoder[i]

    def _align_block(self, i: int) -> nn.Module:
        return self.encoder.conv_block1 if self.share_weights else self.encoder[i]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        levels = x.split(self.num_channels, dim=1)
        encoding = self._encode_aligned(levels) if self.align_features else self._encode_concatenated(levels)
        if self.use_mlp:  # flatten, not squeeze: a batch of 1 keeps its batch dimension
            return self.classifier(encoding.flatten(1)).reshape(x.shape[0])
        return self.classifier(encoding).reshape(x.shape[0])

    def _encode_concatenated(self, levels: tuple[torch.Tensor, ...]) -> torch.Tensor:
        # One encoder call per level even when shared: BatchNorm statistics stay per level (camvis2).
        return torch.cat([self._level_encoder(i)(level) for i, level in enumerate(levels)], dim=1)

    def _encode_aligned(self, levels: tuple[torch.Tensor, ...]) -> torch.Tensor:
        q = self.patch_size // 4  # a P/2 x P/2 encoding covers the centre of the next (x2) level
        previous: torch.Tensor | None = None  # None: the first level, whose encoding part is zero
        for i, level in enumerate(levels):
            # level in the encoding's dtype: under autocast the conv would cast the fp32 cat anyway
            joint = level if previous is None else torch.cat([level.to(previous.dtype), previous], dim=1)
            if i == self.num_levels - 1:
                return self._level_encoder(i)(joint)
            previous = F.pad(self._align_block(i)(joint), (q, q, q, q))
        raise AssertionError("unreachable: num_levels >= 1")

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.num_levels * self.num_channels, self.patch_size, self.patch_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"MultiMagnificationNet expects input (B, {expected[0]}, {expected[1]}, {expected[2]}) "
                f"({self.num_levels} levels x {self.num_channels} channels), got {tuple(x.shape)}"
            )


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Architecture:
    """One of camvis2's eight variants (its README's type_1..type_8 table)."""

    name: str
    use_mlp: bool
    share_weights: bool
    align_features: bool

    @property
    def alias(self) -> str:
        parts = [p for p, on in (("mlp", self.use_mlp), ("share", self.share_weights),
                                 ("align", self.align_features)) if on]
        return "_".join(parts) or "plain"

    def flags(self) -> dict[str, bool]:
        return {"share_weights": self.share_weights, "use_mlp": self.use_mlp,
                "align_features": self.align_features}


# camvis2's table: MLP yes x4 then no x4; sharing yes,yes,no,no; alignment yes,no alternating.
ARCHITECTURES: dict[str, Architecture] = {
    f"type_{k}": Architecture(f"type_{k}", mlp, share, align)
    for k, (mlp, share, align) in enumerate(itertools.product((True, False), repeat=3), start=1)
}
ALIASES: dict[str, str] = {arch.alias: name for name, arch in ARCHITECTURES.items()}
"""Readable names: mlp_share_align, mlp_share, ..., align, plain -> type_k."""


def get_architecture(name: str) -> Architecture:
    """A variant by camvis2 name (type_2) or alias (mlp_share); unknown names list the known ones."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    if name in ALIASES:
        return ARCHITECTURES[ALIASES[name]]
    known = [*ARCHITECTURES, *ALIASES]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"unknown architecture {name!r}{hint}; known: {', '.join(known)}")


def find_architecture(share_weights: bool, use_mlp: bool, align_features: bool) -> Architecture:
    """The variant with these flags (every combination is one of the eight)."""
    flags = {"share_weights": share_weights, "use_mlp": use_mlp, "align_features": align_features}
    return next(a for a in ARCHITECTURES.values() if a.flags() == flags)


def build_model(cfg: JobConfig, patch_size: int) -> MultiMagnificationNet:
    """The model a job config describes, for patches of `patch_size` (the store's)."""
    m = cfg.model
    try:
        return MultiMagnificationNet(num_levels=len(cfg.data.factors), num_channels=NUM_CHANNELS,
                                     size_hidden=m.size_hidden, share_weights=m.share_weights,
                                     use_mlp=m.use_mlp, align_features=m.align_features,
                                     patch_size=patch_size)
    except ValueError as e:
        raise ConfigError(f"cannot build the model (data.factors={list(cfg.data.factors)}, "
                          f"model.size_hidden={m.size_hidden}, store patch size {patch_size}): {e}") from e


# --------------------------------------------------------------------------- cost


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (a shared module counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def training_flops(model: MultiMagnificationNet, num_levels: int | None = None,
                   patch_size: int | None = None) -> tuple[int, int]:
    """(forward, backward) FLOPs of one training sample, measured, not assumed.

    FlopCounterMode's convention: 2 FLOPs per multiply-add of convolutions and matmuls;
    BatchNorm, activations, dropout and pooling are not counted. Measured on a copy of the
    model on the meta device (no arithmetic runs, the model's BatchNorm statistics are left
    alone), in train mode, on a batch of 2 (BatchNorm1d needs > 1), divided by 2. Backward is
    less than 2x forward: the first conv of each level needs no input gradient.
    num_levels / patch_size default to the model's (other values fail its input check).
    Pass the bare model, not a DDP or compiled wrapper.
    """
    levels = model.num_levels if num_levels is None else num_levels
    size = model.patch_size if patch_size is None else patch_size
    probe = copy.deepcopy(model).to(device="meta").train()
    x = torch.zeros(2, levels * model.num_channels, size, size, device="meta")
    with FlopCounterMode(display=False) as forward:
        y = probe(x)
    with FlopCounterMode(display=False) as backward:
        y.sum().backward()
    return forward.get_total_flops() // 2, backward.get_total_flops() // 2


def flops_per_sample(model: MultiMagnificationNet, num_levels: int | None = None,
                     patch_size: int | None = None) -> int:
    """Forward + backward FLOPs of one training sample (see training_flops)."""
    return sum(training_flops(model, num_levels, patch_size))
