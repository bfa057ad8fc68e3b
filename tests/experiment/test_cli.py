"""tfrobseg.experiment.cli: what the experiment scripts print at the end."""

import pandas as pd

from tfrobseg.experiment import cli


def _unit(root, model, loss, fold, dice):
    unit = root / "crossval" / model / loss / f"fold{fold}"
    unit.mkdir(parents=True)
    pd.DataFrame({"phase": "crossval", "model": model, "loss": loss, "fold": fold, "patient_id": ["P0", "P0"],
                  "epsilon": [0.0, 0.5], "dice": [dice, dice / 2], "hd95": 3.0, "assd": 1.0, "empty_pred": False}
                 ).to_csv(unit / "metrics.csv", index=False)
    (unit / "DONE.json").write_text("{}")


def test_the_tables_printed_at_the_end_include_the_additional_one(tmp_path, capsys):
    _unit(tmp_path, "unet", "bce", 0, 0.8)
    _unit(tmp_path, "unet", "focal", 0, 0.6)  # not a study loss: never in Table III, printed apart
    cli._write_tables(tmp_path)
    out = capsys.readouterr().out
    table_iii = out[out.index("**Table III."):out.index("**Additional")]
    assert "| BCE | 0.40 ± 0.00 |" in table_iii and "Focal" not in table_iii
    assert "| crossval | U-Net | Focal | loss focal | 0.5 | 0.30 ± 0.00 |" in out
