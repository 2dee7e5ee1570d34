from pathlib import Path

import pandas as pd
import pytest


def test_generate_writes_parquet_and_reports_the_fraud_rate(cli, tmp_path: Path) -> None:
    out = tmp_path / "d" / "fraud.parquet"
    result = cli("data", "generate", "fraud", "--rows", "2000", "--seed", "1", "-o", str(out))
    assert result.code == 0, result.err
    assert "wrote 2,000 rows of fraud" in result.out
    assert "Class=1:" in result.out
    frame = pd.read_parquet(out)
    assert len(frame) == 2000
    assert list(frame.columns)[:2] == ["Time", "V1"]


def test_generate_csv_is_deterministic(cli, tmp_path: Path) -> None:
    for name in ("a.csv", "b.csv"):
        assert (
            cli("data", "generate", "fraud", "--rows", "50", "-o", str(tmp_path / name)).code == 0
        )
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_unknown_dataset_lists_the_known_ones(cli, tmp_path: Path) -> None:
    result = cli("data", "generate", "cats", "-o", str(tmp_path / "x.csv"))
    assert result.code == 2
    assert "fraud" in result.err
    assert "Traceback" not in result.err


def test_unknown_suffix_is_refused(cli, tmp_path: Path) -> None:
    result = cli("data", "generate", "fraud", "--rows", "10", "-o", str(tmp_path / "x.xlsx"))
    assert result.code == 2
    assert ".csv" in result.err
    assert not (tmp_path / "x.xlsx").exists()


def test_rows_must_be_positive(cli, tmp_path: Path) -> None:
    result = cli("data", "generate", "fraud", "--rows", "0", "-o", str(tmp_path / "x.csv"))
    assert result.code == 2
    assert "--rows" in result.err


def test_generate_drifted_data(cli, tmp_path: Path) -> None:
    plain, drifted = tmp_path / "plain.csv", tmp_path / "drifted.csv"
    args = ["data", "generate", "fraud", "--rows", "3000", "--seed", "2"]
    assert cli(*args, "-o", str(plain)).code == 0
    result = cli(*args, "--drift", "few", "--drift-strength", "3", "-o", str(drifted))
    assert result.code == 0, result.err
    assert "drifted by few" in " ".join(result.out.split())
    before, after = pd.read_csv(plain), pd.read_csv(drifted)
    gap = ((after.mean() - before.mean()).abs() / before.std()).sort_values()
    assert gap.iloc[-2:].min() == pytest.approx(3.0, abs=0.01)
    assert gap.iloc[:-2].max() < 1e-9


def test_unknown_drift_scenario_lists_the_valid_ones(cli, tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    result = cli("data", "generate", "fraud", "--rows", "50", "--drift", "tilt", "-o", str(out))
    assert result.code == 2
    assert "mean-shift, variance, few, many, concept" in result.err
    assert "Traceback" not in result.err
    assert not out.exists()


def test_drift_options_need_a_scenario(cli, tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    result = cli("data", "generate", "fraud", "--drift-strength", "2", "-o", str(out))
    assert result.code == 2
    assert "need --drift SCENARIO" in result.err


def test_ids_give_each_row_an_id_column(cli, tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    result = cli("data", "generate", "fraud", "--rows", "5", "--ids", "tx", "-o", str(out))
    assert result.code == 0, result.err
    frame = pd.read_csv(out)
    assert list(frame["id"]) == [f"tx-{i}" for i in range(5)]
    assert list(frame.columns)[1:3] == ["Time", "V1"]
    refused = cli("data", "generate", "fraud", "--rows", "5", "--ids", " ", "-o", str(out))
    assert refused.code == 2
    assert "--ids needs a non-empty PREFIX" in refused.err


def test_generate_housing_reports_the_price_range(cli, tmp_path: Path) -> None:
    out = tmp_path / "housing.csv"
    result = cli("data", "generate", "housing", "--rows", "2000", "--seed", "1", "-o", str(out))
    assert result.code == 0, result.err
    text = " ".join(result.out.split())
    assert "wrote 2,000 rows of housing" in text
    assert "(price: median " in text
    assert "5–95 %" in text
    assert len(pd.read_csv(out)) == 2000


def test_housing_has_no_drift_scenarios(cli, tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    result = cli("data", "generate", "housing", "--rows", "50", "--drift", "many", "-o", str(out))
    assert result.code == 2
    assert "dataset 'housing' has no drift scenarios" in result.err
    assert not out.exists()


def test_generate_shapes_writes_a_cifar_10_folder(cli, tmp_path: Path) -> None:
    from shipyard.data.cifar import read_cifar

    out = tmp_path / "cifar-10-batches-bin"
    result = cli("data", "generate", "shapes", "--rows", "120", "--seed", "2", "-o", str(out))
    assert result.code == 0, result.err
    assert "wrote 120 images of shapes (32×32 RGB" in result.out
    assert "CIFAR-10 binary format" in result.out
    images = read_cifar(out)
    assert images.pixels.shape == (120, 3072)
    assert len(set(images.labels.tolist())) == 10


def test_generate_digits_writes_a_png_folder_per_class(cli, tmp_path: Path) -> None:
    out = tmp_path / "digits"
    result = cli("data", "generate", "digits", "-o", str(out))
    assert result.code == 0, result.err
    assert "wrote 1,797 images of digits" in result.out
    assert sorted(p.name for p in out.iterdir()) == [str(n) for n in range(10)]
    assert len(list((out / "0").glob("*.png"))) == 178


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("digits", "--layout", "cifar"), "the CIFAR-10 format holds 32×32 RGB only"),
        (("digits", "--rows", "10"), "digits is a fixed set of images; leave out --rows"),
        (("shapes", "--layout", "tiles"), "unknown --layout 'tiles'; choose cifar or folder"),
        (("shapes", "--drift", "many"), "image dataset 'shapes' has no drift scenarios"),
        (("fraud", "--layout", "cifar"), "--layout is for image datasets"),
    ],
)
def test_image_options_that_do_not_fit_are_refused(
    cli, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = cli("data", "generate", *args, "-o", str(tmp_path / "out"))
    assert result.code == 2
    assert message in result.err.replace("\n", " ")
    assert "Traceback" not in result.err


def test_images_are_not_written_over_a_folder_in_use(cli, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    result = cli("data", "generate", "shapes", "--rows", "10", "-o", str(tmp_path / "busy"))
    assert result.code == 2
    assert "is not an empty folder" in result.err
