"""``python -m tfrobseg.models``: table of parameters, MACs per slice (per volume for the 3D models) and
output shape of every model."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tfrobseg.models", description=__doc__)
    parser.add_argument("--size", type=int, default=256, help="slice height and width (default 256)")
    parser.add_argument("--slices", type=int, default=32, help="input depth of the 3D models (default 32)")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--filters", type=int, nargs="+", default=None, help="filters per level")
    parser.add_argument("--models", nargs="+", default=None, help="names (default: all)")
    args = parser.parse_args(argv)

    from tfrobseg.models import (
        MODEL_DISPLAY_NAMES,
        MODEL_NAMES,
        build_model,
        count_macs,
        model_spatial_rank,
    )
    from tfrobseg.models.defaults import FILTERS

    filters = tuple(args.filters) if args.filters else FILTERS
    names = args.models or MODEL_NAMES
    shapes = {2: (args.size, args.size, args.channels), 3: (args.slices, args.size, args.size, args.channels)}
    baselines = {2: "unet", 3: "unet_3d"}
    ranks = {model_spatial_rank(name) for name in names}
    print(f"input {shapes[2]}, filters {filters}; MACs = multiply-accumulates per slice (FLOPs ~ 2 x MACs)")
    if 3 in ranks:
        print(f"3D models: input {shapes[3]}, MACs per volume, '+ U-Net' against the 3D U-Net")
    print("'+ U-Net' = parameters of the model's own component (model minus U-Net with the same filters)")
    header = f"{'model':<28}{'display':<20}{'params':>12}{'+ U-Net':>12}{'trainable':>12}{'GMACs':>9}  output"
    print(header)
    print("-" * len(header))
    unet_params = {rank: build_model(baselines[rank], shapes[rank], filters=filters).count_params() for rank in ranks}
    for name in names:
        rank = model_spatial_rank(name)
        try:
            model = build_model(name, shapes[rank], filters=filters)
        except ValueError as exc:  # e.g. a size the EfficientNet encoder cannot take
            print(f"{name:<28}{MODEL_DISPLAY_NAMES[name]:<20}not built: {exc}")
            continue
        trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
        print(
            f"{name:<28}{MODEL_DISPLAY_NAMES[name]:<20}{model.count_params():>12,}"
            f"{model.count_params() - unet_params[rank]:>+12,}{trainable:>12,}"
            f"{count_macs(model) / 1e9:>9.3f}  {model.output_shape}"
        )


if __name__ == "__main__":
    main()
