"""MultiMagnificationNet: all eight variants, camvis2's state_dict names, alignment, cost, CLI."""

from __future__ import annotations

import itertools

import pytest
import torch

from camvis.cli.model import main as model_main
from camvis.config import load_job_config
from camvis.errors import ConfigError
from camvis.model import (ALIASES, ARCHITECTURES, ConvBlock, MultiMagnificationNet, build_model,
                          count_parameters, find_architecture, flops_per_sample, get_architecture,
                          num_blocks_for, training_flops)

C = 4
VARIANTS = [a.flags() for a in ARCHITECTURES.values()]
VARIANT_IDS = [a.name for a in ARCHITECTURES.values()]


def make(levels: int, hidden: int = 4, patch: int = 16, **flags: bool) -> MultiMagnificationNet:
    torch.manual_seed(0)
    return MultiMagnificationNet(levels, C, hidden, patch_size=patch, **flags)


def inputs(batch: int, levels: int, patch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, levels * C, patch, patch, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- forward / backward


@pytest.mark.parametrize("levels,patch", [(1, 16), (2, 32), (5, 16)])
@pytest.mark.parametrize("flags", VARIANTS, ids=VARIANT_IDS)
def test_every_variant_trains_in_fp32(flags: dict[str, bool], levels: int, patch: int) -> None:
    model = make(levels, hidden=4, patch=patch, **flags).train()
    y = model(inputs(3, levels, patch))
    assert y.shape == (3,) and y.dtype == torch.float32 and torch.isfinite(y).all()
    torch.nn.functional.binary_cross_entropy_with_logits(y, torch.tensor([0.0, 1.0, 1.0])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("flags", VARIANTS, ids=VARIANT_IDS)
def test_gradients_reach_every_level(flags: dict[str, bool]) -> None:
    levels, patch = 3, 16
    model = make(levels, hidden=6, patch=patch, **flags).eval()  # eval: no dropout zeroing a level
    x = inputs(2, levels, patch).requires_grad_()
    model(x).sum().backward()
    per_level = x.grad.abs().reshape(2, levels, C, patch, patch).sum(dim=(0, 2, 3, 4))
    assert (per_level > 0).all(), f"levels without gradient: {per_level.tolist()}"


@pytest.mark.parametrize("use_mlp", [False, True])
def test_batch_of_one_keeps_its_batch_dimension(use_mlp: bool) -> None:
    model = make(2, use_mlp=use_mlp).eval()
    assert model(inputs(1, 2, 16)).shape == (1,)


@pytest.mark.parametrize("align", [False, True])
def test_bf16_autocast_on_cpu(align: bool) -> None:
    model = make(3, hidden=4, patch=16, share_weights=True, use_mlp=True, align_features=align).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(inputs(4, 3, 16))
    assert y.shape == (4,) and torch.isfinite(y.float()).all()
    y.float().sum().backward()
    assert model.encoder.conv_block1.conv.weight.grad is not None


def test_wrong_input_shape_is_a_clear_error() -> None:
    model = make(2, patch=16)
    with pytest.raises(ValueError, match=r"expects input \(B, 8, 16, 16\).*got \(2, 4, 16, 16\)"):
        model(torch.zeros(2, 4, 16, 16))


@pytest.mark.parametrize("patch", [0, 2, 3, 12, 48, 100])
def test_patch_size_must_be_a_power_of_two(patch: int) -> None:
    with pytest.raises(ValueError, match="power of 2 >= 4"):
        MultiMagnificationNet(2, patch_size=patch)


def test_blocks_follow_patch_size() -> None:
    assert [num_blocks_for(p) for p in (4, 16, 32, 128)] == [2, 4, 5, 7]
    assert len(list(make(1, patch=32, share_weights=True).encoder.children())) == 5


# --------------------------------------------------------------------------- alignment


def test_aligned_encoding_sits_at_the_centre_of_the_next_level() -> None:
    # hidden != patch: camvis2 padded by hidden/4 and would not even fit here
    levels, hidden, patch = 2, 4, 16
    model = make(levels, hidden=hidden, patch=patch, align_features=True).eval()
    seen: list[torch.Tensor] = []
    model.encoder[1].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x = inputs(2, levels, patch)
    model(x)
    joint = seen[0]
    assert joint.shape == (2, C + hidden, patch, patch)
    assert torch.equal(joint[:, :C], x[:, C:])  # the level's own channels come first
    q = patch // 4
    inner = torch.zeros(patch, patch, dtype=torch.bool)
    inner[q:patch - q, q:patch - q] = True
    encoding = joint[:, C:]
    assert (encoding[..., ~inner] == 0).all()  # zero canvas around
    expected = model.encoder[0](torch.cat([x[:, :C], torch.zeros(2, hidden, patch, patch)], 1))
    assert torch.allclose(encoding[..., q:patch - q, q:patch - q], expected, atol=1e-6)


def test_first_level_conv_equals_conv_of_zero_filled_input() -> None:
    torch.manual_seed(0)
    block = ConvBlock(C + 5, 5).eval()
    x = torch.randn(2, C, 8, 8)
    full = block(torch.cat([x, torch.zeros(2, 5, 8, 8)], 1))
    part = block(x)
    assert torch.allclose(full, part, atol=1e-6)
    part.sum().backward()
    assert block.conv.weight.grad.shape == (5, C + 5, 3, 3)
    assert (block.conv.weight.grad[:, C:] == 0).all() and block.conv.weight.grad[:, :C].abs().sum() > 0


# --------------------------------------------------------------------------- parameters


def n_block(cin: int, cout: int) -> int:
    return 9 * cin * cout + cout + 2 * cout  # conv 3x3 weight + bias, batchnorm weight + bias


def n_encoder(cin: int, hidden: int, blocks: int) -> int:
    return n_block(cin, hidden) + (blocks - 1) * n_block(hidden, hidden)


def n_classifier(size_in: int, hidden: int, mlp: bool) -> int:
    # MLP: fc1 + batchnorm1d + fc2; conv: 1x1 conv weight + bias
    return (size_in * hidden + hidden) + 2 * hidden + (hidden + 1) if mlp else size_in + 1


def expected_parameters(levels: int, hidden: int, patch: int, share_weights: bool, use_mlp: bool,
                        align_features: bool) -> int:
    blocks = patch.bit_length() - 1
    if align_features:
        cin = C + hidden
        encoders = n_encoder(cin, hidden, blocks) + (0 if share_weights else (levels - 1) * n_block(cin, hidden))
        return encoders + n_classifier(hidden, hidden, use_mlp)
    encoders = n_encoder(C, hidden, blocks) * (1 if share_weights else levels)
    return encoders + n_classifier(levels * hidden, hidden, use_mlp)


@pytest.mark.parametrize("levels,hidden,patch", [(1, 4, 16), (3, 6, 32), (5, 5, 16)])
@pytest.mark.parametrize("flags", VARIANTS, ids=VARIANT_IDS)
def test_parameter_count_closed_form(flags: dict[str, bool], levels: int, hidden: int, patch: int) -> None:
    model = MultiMagnificationNet(levels, C, hidden, patch_size=patch, **flags)
    assert count_parameters(model) == expected_parameters(levels, hidden, patch, **flags)


def test_paper_configuration_parameter_count() -> None:
    # type_2 (mlp + share), 5 levels, hidden 128, patch 128: the configuration camvis2 recommends
    model = MultiMagnificationNet(5, share_weights=True, use_mlp=True)
    assert count_parameters(model) == 974_465 == expected_parameters(5, 128, 128, True, True, False)


# --------------------------------------------------------------------------- camvis2 state_dict names


def camvis2_keys(levels: int, blocks: int, share_weights: bool, use_mlp: bool, align_features: bool) -> list[str]:
    """state_dict keys in camvis2's registration order (its model/model.py)."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]

    def block(prefix: str) -> list[str]:
        return [f"{prefix}.conv.weight", f"{prefix}.conv.bias"] + [f"{prefix}.batchnorm.{k}" for k in bn]

    def encoder(prefix: str) -> list[str]:
        return [k for b in range(1, blocks + 1) for k in block(f"{prefix}.conv_block{b}")]

    if share_weights:
        keys = encoder("encoder")
    elif align_features:
        keys = [k for i in range(levels - 1) for k in block(f"encoder.{i}")] + encoder(f"encoder.{levels - 1}")
    else:
        keys = [k for i in range(levels) for k in encoder(f"encoder.{i}")]
    if use_mlp:  # camvis2's MLP registers fc1, fc2, then batchnorm
        return keys + ["classifier.fc1.weight", "classifier.fc1.bias", "classifier.fc2.weight",
                       "classifier.fc2.bias"] + [f"classifier.batchnorm.{k}" for k in bn]
    return keys + ["classifier.weight", "classifier.bias"]


@pytest.mark.parametrize("flags", VARIANTS, ids=VARIANT_IDS)
def test_state_dict_keys_are_camvis2s(flags: dict[str, bool]) -> None:
    model = MultiMagnificationNet(3, C, 4, patch_size=16, **flags)
    assert list(model.state_dict()) == camvis2_keys(3, 4, **flags)


def test_camvis2_names_and_shapes_at_paper_size() -> None:
    shared = MultiMagnificationNet(5, share_weights=True).state_dict()
    assert shared["encoder.conv_block1.conv.weight"].shape == (128, 4, 3, 3)
    assert "encoder.conv_block7.batchnorm.running_var" in shared and "encoder.conv_block8.conv.weight" not in shared
    separate = MultiMagnificationNet(5, use_mlp=True).state_dict()
    assert separate["encoder.4.conv_block1.conv.weight"].shape == (128, 4, 3, 3)
    assert separate["classifier.fc1.weight"].shape == (128, 5 * 128)
    aligned = MultiMagnificationNet(5, align_features=True).state_dict()
    # camvis2: every aligned conv takes C + hidden channels, the first level's included
    assert aligned["encoder.0.conv.weight"].shape == (128, 132, 3, 3)
    assert aligned["encoder.4.conv_block1.conv.weight"].shape == (128, 132, 3, 3)
    assert aligned["classifier.weight"].shape == (1, 128, 1, 1)


@pytest.mark.parametrize("flags", VARIANTS, ids=VARIANT_IDS)
def test_state_dict_round_trip(flags: dict[str, bool], tmp_path) -> None:
    trained = make(3, hidden=4, patch=16, **flags).train()
    trained(inputs(4, 3, 16))  # moves BatchNorm running statistics away from their defaults
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    fresh = MultiMagnificationNet(3, C, 4, patch_size=16, **flags)
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    trained.eval(), fresh.eval()
    x = inputs(3, 3, 16, seed=7)
    with torch.no_grad():
        assert torch.equal(trained(x), fresh(x))


# --------------------------------------------------------------------------- registry, build, cost


def test_registry_is_camvis2s_table() -> None:
    table = {  # name: (mlp, share, align), camvis2 README
        "type_1": (1, 1, 1), "type_2": (1, 1, 0), "type_3": (1, 0, 1), "type_4": (1, 0, 0),
        "type_5": (0, 1, 1), "type_6": (0, 1, 0), "type_7": (0, 0, 1), "type_8": (0, 0, 0),
    }
    assert {n: (a.use_mlp, a.share_weights, a.align_features) for n, a in ARCHITECTURES.items()} == \
        {n: tuple(map(bool, v)) for n, v in table.items()}
    assert get_architecture("mlp_share") is ARCHITECTURES["type_2"] is get_architecture("type_2")
    assert get_architecture("plain") is ARCHITECTURES["type_8"] and len(ALIASES) == 8
    for share, mlp, align in itertools.product((False, True), repeat=3):
        assert find_architecture(share, mlp, align).flags() == \
            {"share_weights": share, "use_mlp": mlp, "align_features": align}


def test_unknown_architecture_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown architecture 'type_9'.*known: type_1, type_2.*mlp_share"):
        get_architecture("type_9")


def test_build_model_from_config() -> None:
    cfg = load_job_config(None, ["data.factors=[2,4,8]", "model.size_hidden=4", "model.share_weights=false",
                                 "model.use_mlp=false", "model.align_features=true"])
    model = build_model(cfg, patch_size=16)
    assert (model.num_levels, model.size_hidden, model.patch_size) == (3, 4, 16)
    assert (model.share_weights, model.use_mlp, model.align_features) == (False, False, True)
    assert model(inputs(2, 3, 16)).shape == (2,)
    with pytest.raises(ConfigError, match="patch size 24"):
        build_model(cfg, patch_size=24)


def test_forward_flops_match_the_conv_arithmetic() -> None:
    levels, hidden, patch = 2, 4, 16  # cat, shared, 1x1 conv classifier: 4 blocks per level
    model = make(levels, hidden=hidden, patch=patch, share_weights=True)
    convs = sum(2 * 9 * (C if k == 0 else hidden) * hidden * (patch >> k) ** 2 for k in range(4))
    forward, backward = training_flops(model)
    assert forward == levels * convs + 2 * levels * hidden
    # backward measured: ~2x forward, less the first conv's input gradient (input needs none)
    first_conv = 2 * 9 * C * hidden * patch**2
    assert backward == 2 * forward - levels * first_conv
    assert flops_per_sample(model, levels, patch) == forward + backward


def test_flops_leave_the_model_alone() -> None:
    model = make(2, share_weights=True, use_mlp=True).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flops_per_sample(model)
    assert not model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"


def test_aligned_first_level_skips_the_zero_channels_flops() -> None:
    levels, hidden, patch = 2, 4, 16
    forward, _ = training_flops(make(levels, hidden=hidden, patch=patch, share_weights=True, align_features=True))
    full = lambda cin: 2 * 9 * cin * hidden * patch**2  # noqa: E731  first block of a level
    rest = sum(2 * 9 * hidden * hidden * (patch >> k) ** 2 for k in range(1, 4))
    assert forward == full(C) + full(C + hidden) + rest + 2 * hidden


# --------------------------------------------------------------------------- CLI


def test_cli_summary_prints_the_eight_variants(capsys: pytest.CaptureFixture[str]) -> None:
    rc = model_main(["summary", "model.size_hidden=4", "data.factors=[2,4,8]", "--patch-size", "16"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "type_" in line]
    assert rc == 0 and len(rows) == 8
    assert [r.split("│")[2].strip() for r in rows] == [f"type_{k}" for k in range(1, 9)]
    selected = [r for r in rows if r.split("│")[1].strip() == "*"]
    assert len(selected) == 1 and "type_2" in selected[0]  # the default config: mlp + share
    expected = expected_parameters(3, 4, 16, share_weights=True, use_mlp=True, align_features=False)
    assert f"{expected:,}" in selected[0]


def test_cli_reads_a_config_file(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("data:\n  factors: [2, 4]\nmodel:\n  size_hidden: 4\n  align_features: true\n")
    assert model_main(["summary", str(config), "model.use_mlp=false", "--patch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "2 levels" in out and [r for r in out.splitlines() if "type_5" in r][0].split("│")[1].strip() == "*"


@pytest.mark.parametrize("argv,message", [
    (["summary", "--patch-size", "12"], "--patch-size: patch_size must be a power of 2"),
    (["summary", "model.size_hiden=4"], "did you mean model.size_hidden"),
    (["summary", "missing.yaml"], "missing.yaml: cannot read config"),
])
def test_cli_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert model_main(argv) == 2
    assert message in capsys.readouterr().err
