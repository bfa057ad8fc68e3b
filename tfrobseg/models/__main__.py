"""``python -m tfrobseg.models``: table of parameters, MACs per slice and output shape of every model."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tfrobseg.models", description=__doc__)
    parser.add_argument("--size", type=int, default=256, help="slice height and width (default 256)")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--filters", type=int, nargs="+", default=None, help="filters per level")
    parser.add_argument("--models", nargs="+", default=None, help="names (default: all)")
    args = parser.parse_args(argv)

    from tfrobseg.models import (
        MODEL_DISPLAY_NAMES,
        MODEL_NAMES,
        build_model,
        count_macs,
    )
    from tfrobseg.models.defaults import FILTERS

    filters = tuple(args.filters) if args.filters else FILTERS
    names = args.models or MODEL_NAMES
    shape = (args.size, args.size, args.channels)
    print(f"input {shape}, filters {filters}; MACs = multiply-accumulates per slice (FLOPs ~ 2 x MACs)")
    print("'+ U-Net' = parameters of the model's own component (model minus U-Net with the same filters)")
    header = f"{'model':<24}{'display':<18}{'params':>12}{'+ U-Net':>10}{'trainable':>12}{'GMACs':>9}  output"
    print(header)
    print("-" * len(header))
    unet_params = build_model("unet", shape, filters=filters).count_params()
    for name in names:
        model = build_model(name, shape, filters=filters)
        trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
        print(
            f"{name:<24}{MODEL_DISPLAY_NAMES[name]:<18}{model.count_params():>12,}"
            f"{model.count_params() - unet_params:>+10,}{trainable:>12,}"
            f"{count_macs(model) / 1e9:>9.3f}  {model.output_shape}"
        )


if __name__ == "__main__":
    main()
