"""The generation commands end to end: train-generator -> generate -> validate, import-samples."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from groundsynth.cli import app

runner = CliRunner()

TINY_CONDITIONAL = ["--width", "4", "--d-width", "4", "--z-dim", "4"]
COMMON = ["--image-size", "32", "--max-steps", "2", "--checkpoint-every", "2", "--batch-size", "2"]
COMMON += ["--num-workers", "0", "--no-progress"]


def test_train_generator_dry_run_prints_the_resolved_config(tiny_dataset, tmp_path):
    res = runner.invoke(
        app, ["train-generator", str(tiny_dataset), "--out", str(tmp_path / "r"), "--dry-run"]
    )
    assert res.exit_code == 0, res.output
    assert "discriminator: unet" in res.output and "loss: oasis" in res.output
    assert not (tmp_path / "r").exists()
    res = runner.invoke(
        app, ["train-generator", str(tiny_dataset), "--out", str(tmp_path / "r"), "--kind", "gan"]
    )
    assert res.exit_code != 0 and "must be one of conditional, diffusion" in res.output


def test_conditional_train_generate_validate(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    res = runner.invoke(
        app, ["train-generator", str(tiny_dataset), "--out", str(run), *COMMON, *TINY_CONDITIONAL]
    )
    assert res.exit_code == 0, res.output
    assert (run / "checkpoints" / "step00000002.pt").is_file()
    out = tmp_path / "synth"
    args = ["generate", "--model", str(run), "--n", "3", "--out", str(out), "--no-progress"]
    res = runner.invoke(app, [*args, "--target", "Crop>=0.25"])
    assert res.exit_code == 0, res.output
    assert "3 samples" in res.output and "conditional:run@step2" in res.output
    res = runner.invoke(app, ["validate", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "no problems" in res.output
    # --layouts and --target together are refused; library errors become one clear line
    res = runner.invoke(
        app, [*args, "--layouts", "augmented", "--target", "Crop>=0.25"], terminal_width=200
    )
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)  # a usage error
    assert "give --layouts or --target/--target-distribution, not both" in res.output
    assert "Traceback" not in res.output and "Error" in res.output
    res = runner.invoke(app, [*args, "--target", "Forest>=0.2"])
    assert res.exit_code == 2 and "unknown class" in res.output


def test_diffusion_train_generate(tiny_dataset, tmp_path):
    run = tmp_path / "diff"
    res = runner.invoke(
        app,
        ["train-generator", str(tiny_dataset), "--out", str(run), "--kind", "diffusion", *COMMON]
        + ["--channels", "4,8", "--inference-steps", "2", "--ema-decay", "0.9"],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "synth"
    res = runner.invoke(
        app,
        ["generate", "--model", str(run), "--n", "2", "--out", str(out), "--no-progress"]
        + ["--sampler", "ddim", "--steps", "2"],
    )
    assert res.exit_code == 0, res.output
    assert "pseudo-label" in res.output
    assert len(list((out / "synth" / "images").glob("*.png"))) == 2


def test_cascade_train_generate(tiny_dataset, tmp_path):
    run = tmp_path / "cascade"
    train = ["train-generator", str(tiny_dataset), "--out", str(run), "--kind", "diffusion"]
    train += [*COMMON, "--channels", "4,8", "--inference-steps", "2", "--standardise"]
    res = runner.invoke(app, [*train, "--cascade-size", "8", "--cascade-every", "3", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "cascade_size: 8" in res.output and "cascade_every: 3" in res.output
    res = runner.invoke(app, [*train, "--cascade-size", "12"])
    assert res.exit_code != 0 and "cascade_size 12 must divide the image size 32" in res.output
    cdiff = [*train[:5], "conditional-diffusion", *train[6:], "--cascade-size", "8"]
    res = runner.invoke(app, cdiff)
    assert res.exit_code != 0 and "for --kind diffusion only" in res.output
    res = runner.invoke(app, [*train, "--cascade-size", "8", "--cascade-lr", "0.01"])
    assert res.exit_code == 0, res.output
    assert "cascade_lr: 0.01" in (run / "config.yaml").read_text()
    out = tmp_path / "synth"
    args = ["generate", "--model", str(run), "--n", "2", "--out", str(out), "--no-progress"]
    res = runner.invoke(app, [*args, "--steps", "2"])
    assert res.exit_code == 0, res.output
    images = sorted((out / "synth" / "images").glob("*.png"))
    assert len(images) == 2 and np.asarray(Image.open(images[0])).shape == (32, 32, 3)


def test_conditional_diffusion_train_generate_validate(tiny_dataset, tmp_path):
    run = tmp_path / "cdiff"
    train = ["train-generator", str(tiny_dataset), "--out", str(run), *COMMON]
    train += ["--kind", "conditional-diffusion", "--channels", "4,8", "--inference-steps", "2"]
    res = runner.invoke(app, [*train, "--map-dropout", "0.2", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "map_dropout: 0.2" in res.output and "guidance: 1.0" in res.output
    assert "standardise: false" in res.output
    res = runner.invoke(app, [*train, "--standardise", "--dry-run"])
    assert res.exit_code == 0 and "standardise: true" in res.output, res.output
    res = runner.invoke(app, [*train, "--map-dropout", "1.5"])
    assert res.exit_code != 0 and "map_dropout" in res.output
    res = runner.invoke(app, [*train, "--map-dropout", "0.2", "--ema-decay", "0.9"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "synth"
    args = ["generate", "--model", str(run), "--n", "2", "--out", str(out), "--no-progress"]
    res = runner.invoke(app, [*args, "--target", "Crop>=0.25", "--guidance", "2", "--steps", "2"])
    assert res.exit_code == 0, res.output
    assert "conditional-diffusion:cdiff@step2" in res.output and "class share" in res.output
    assert len(list((out / "synth" / "masks").glob("*.png"))) == 2
    res = runner.invoke(app, ["validate", str(out), "--no-progress"])
    assert res.exit_code == 0 and "no problems" in res.output, res.output


def test_import_samples_command(tmp_path):
    src = tmp_path / "sg3"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.full((48, 64, 3), 40 * i, dtype=np.uint8)).save(src / f"{i:04d}.png")
    out = tmp_path / "ds"
    args = ["import-samples", str(src), "--out", str(out), "--name", "stylegan3"]
    res = runner.invoke(app, [*args, "--image-size", "32", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "3 images" in res.output and "stylegan3" in res.output
    assert Image.open(out / "synth" / "images" / "0002.png").size == (32, 32)
