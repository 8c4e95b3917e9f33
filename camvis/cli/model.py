"""`camvis-model`: inspect MultiMagnificationNet variants."""

from __future__ import annotations

import argparse
import sys

from rich.table import Table

from camvis.cli import ERRORS, bounded, config_and_overrides, fail, new_parser
from camvis.console import default_console
from camvis.errors import ConfigError

DEFAULT_PATCH_SIZE = 128
EPILOG = """examples:
  camvis-model summary                                  # the default config (5 levels, hidden 128)
  camvis-model summary configs/demo.yaml                # a grid's base model, patch size from its store
  camvis-model summary configs/demo.yaml --patch-size 64   # another patch size
  camvis-model summary configs/job.yaml model.size_hidden=64 data.factors=[2,4,8] --patch-size 64
"""


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("camvis-model", __doc__, EPILOG)
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser(
        "summary", help="parameters and training GFLOPs of the 8 variants for a config",
        description="For the config's level count and hidden size: each of camvis2's 8 variants "
                    "(type_1..type_8) with its flags, parameter count and forward+backward GFLOPs "
                    "of one training sample. The config's own variant is marked with *.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    summary.add_argument("args", nargs="*", metavar="[CONFIG] [key=value ...]",
                         help="a job config YAML (optional, first) and dotted overrides")
    summary.add_argument("--patch-size", type=bounded(int, 4, 4096),
                         help=f"patch size in pixels, a power of 2 >= 4 (default: the config's data.store's, "
                              f"else {DEFAULT_PATCH_SIZE}, said as assumed)")
    return parser


def summary_table(config: str | None, overrides: list[str], patch_size: int | None) -> Table:
    # torch is imported here, not at module level: `camvis-model --help` stays instant.
    import torch

    from camvis.config import load_job_config
    from camvis.model import (ARCHITECTURES, MultiMagnificationNet, count_parameters, find_architecture,
                              num_blocks_for, training_flops)

    cfg = load_job_config(config, overrides, grid_base=True)  # a grid: summarize its base models
    patch_size, source = _patch_size(patch_size, cfg.data.store)
    try:
        num_blocks_for(patch_size)
    except ValueError as e:
        raise ConfigError(f"--patch-size: {e}") from e
    m = cfg.model
    selected = find_architecture(m.share_weights, m.use_mlp, m.align_features).name
    levels, hidden = len(cfg.data.factors), cfg.model.size_hidden
    table = Table(title=f"MultiMagnificationNet: {levels} levels (factors {list(cfg.data.factors)}), "
                        f"hidden {hidden}, patch {patch_size} ({source})")
    for column in ("", "name", "alias", "mlp", "share", "align"):
        table.add_column(column)
    for column in ("parameters", "GFLOP fwd", "GFLOP train"):
        table.add_column(column, justify="right")
    for arch in ARCHITECTURES.values():
        with torch.device("meta"):  # counted, never allocated: model.size_hidden=100000 is 1.4 TB of weights
            model = MultiMagnificationNet(levels, size_hidden=hidden, patch_size=patch_size, **arch.flags())
        forward, backward = training_flops(model)
        table.add_row("*" if arch.name == selected else "", arch.name, arch.alias, _yes(arch.use_mlp),
                      _yes(arch.share_weights), _yes(arch.align_features), f"{count_parameters(model):,}",
                      _gflop(forward), _gflop(forward + backward))
    table.caption = "GFLOP: per sample, convs and matmuls (2 per multiply-add); train = forward + backward"
    return table


def _patch_size(given: int | None, store: str) -> tuple[int, str]:
    """(patch size, where it comes from): --patch-size, else the store's attribute, else the default, assumed."""
    if given is not None:
        return given, "--patch-size"
    from camvis.data.store_info import StoreInfo

    info = StoreInfo.read(store)
    if info is not None and isinstance(info.patch_size, int):
        return info.patch_size, f"from {store}"
    return DEFAULT_PATCH_SIZE, f"assumed: no store at {store}; --patch-size sets it"


def _gflop(flops: int) -> str:
    return f"{flops / 1e9:.4g}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config, overrides = config_and_overrides(args.args[0] if args.args else None, args.args[1:])
        table = summary_table(config, overrides, args.patch_size)
    except ERRORS as e:  # OSError: one line for a path (camvis.io.os_error)
        return fail(e)
    default_console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
