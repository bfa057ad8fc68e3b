"""tfrobseg.models.complexity (MACs counted by hand) and the ``python -m tfrobseg.models`` table."""

from __future__ import annotations

from model_helpers import FILTERS, SMALL

from tfrobseg.models import build_model, count_macs, layer_macs
from tfrobseg.models.__main__ import main


def test_count_macs_unet_by_hand():
    """U-Net at 64 x 64, filters (4, 8, 16): every conv counted by hand."""
    model = build_model("unet", (64, 64, 1), filters=FILTERS)
    enc = 64 * 64 * 9 * (1 * 4 + 4 * 4) + 32 * 32 * 9 * (4 * 8 + 8 * 8)
    bottleneck = 16 * 16 * 9 * (8 * 16 + 16 * 16)
    # up-convs: every input pixel times 2x2 kernel times C_in x C_out
    dec1 = 16 * 16 * 4 * 16 * 8 + 32 * 32 * 9 * (16 * 8 + 8 * 8)
    dec0 = 32 * 32 * 4 * 8 * 4 + 64 * 64 * 9 * (8 * 4 + 4 * 4)
    head = 64 * 64 * 4 * 1
    assert count_macs(model) == enc + bottleneck + dec1 + dec0 + head == 6_324_224


def test_count_macs_components():
    unet = count_macs(build_model("unet", (64, 64, 1), filters=FILTERS))
    # Alom's t = 2 (the default): the feed-forward conv and two recurrent steps, 3 convs per RCL; t = 0: one.
    r2 = build_model("recurrent_unet", (64, 64, 1), filters=FILTERS)
    r0 = build_model("recurrent_unet", (64, 64, 1), filters=FILTERS, t=0)
    rcl_t0 = sum(layer_macs(layer) for layer in r0.layers if "_rcl" in layer.name)
    # two 3x3 RCLs per level block at the block's width and resolution (64, 32, 16, 32, 64 px)
    assert rcl_t0 == 2 * 9 * (64 * 64 * 16 * 2 + 32 * 32 * 64 * 2 + 16 * 16 * 256)
    assert sum(layer_macs(layer) for layer in r2.layers if "_rcl" in layer.name) == 3 * rcl_t0
    assert count_macs(r0) - rcl_t0 == count_macs(r2) - 3 * rcl_t0  # the rest does not depend on t
    vit = build_model("unet_vit", (64, 64, 1), filters=FILTERS, **SMALL["unet_vit"])
    n, e, mlp = 16 * 16, 16, 32  # tokens at the 16 x 16 bottleneck, width, MLP width
    blocks = 2 * (4 * n * e * e + 2 * n * n * e + 2 * n * e * mlp)
    assert count_macs(vit) - unet == blocks + 2 * n * 16 * e  # + patch embedding and projection back


def test_model_table_rows(capsys):
    """One row per asked model: display name, parameters, difference to U-Net, MACs, output shape."""
    main(["--size", "64", "--filters", *map(str, FILTERS), "--models", "unet", "resunet"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("input (64, 64, 1), filters (4, 8, 16);")
    unet, resunet = lines[-2].split(), lines[-1].split()
    unet_params = build_model("unet", (64, 64, 1), filters=FILTERS).count_params()
    resunet_params = build_model("resunet", (64, 64, 1), filters=FILTERS).count_params()
    assert unet[:4] == ["unet", "U-Net", f"{unet_params:,}", "+0"]
    assert resunet[:4] == ["resunet", "ResU-Net", f"{resunet_params:,}", f"{resunet_params - unet_params:+,}"]
    assert unet[5] == f"{6_324_224 / 1e9:.3f}"  # the hand count of test_count_macs_unet_by_hand
