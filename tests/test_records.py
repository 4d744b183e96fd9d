"""Run records (issue 18, item 2): what a record holds, bdn denoise's sidecar, bdn verify, weights' file mode."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from skimage import data as skdata

import bdn
from bdn.cli import main
from bdn.io import write_image
from bdn.record import FORMAT, file_sha256, make_record, read_record, record_path, write_record


@pytest.fixture
def noisy(tmp_path):
    path = tmp_path / "cam.png"
    write_image(path, bdn.add_noise(skdata.camera()[::8, ::8] / 255.0, "gaussian", 25, seed=0))
    return path


def test_a_record_holds_environment_options_and_hashes(tmp_path, noisy):
    record = make_record("denoise", {"method": "median", "params": {"size": 3}}, inputs=[noisy], seed=7, device="cpu")
    path = write_record(tmp_path / "r.json", record)
    back = read_record(path)
    assert back["format"] == FORMAT and back["command"] == "denoise" and back["seed"] == 7
    assert back["inputs"] == [{"path": str(noisy), "sha256": file_sha256(noisy)}]
    env = back["environment"]
    assert env["bdn_version"] == bdn.__version__ and env["device"] == "cpu"
    assert {"torch", "numpy", "scikit-image"} <= set(env["libraries"])
    assert env["git_commit"] is None or len(env["git_commit"]) == 40
    assert back["options"] == {"method": "median", "params": {"size": 3}}


def test_read_record_refuses_other_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{}")
    with pytest.raises(bdn.BdnError, match="not a run record"):
        read_record(path)


def test_denoise_writes_a_record_beside_each_output_and_verify_says_identical(tmp_path, noisy, capsys):
    out = tmp_path / "out"
    assert main(["denoise", str(noisy), "-o", str(out), "-m", "median", "--param", "size=3"]) == 0
    record = json.loads(record_path(out / "cam.png").read_text())
    assert record["options"] == {"method": "median", "params": {"size": 3}, "overwrite": False}
    assert record["inputs"][0]["sha256"] == file_sha256(noisy)
    assert record["outputs"][0]["sha256"] == file_sha256(out / "cam.png")
    assert record["weights"] == [] and record["seed"] is None
    capsys.readouterr()
    assert main(["verify", str(record_path(out / "cam.png"))]) == 0
    assert "identical" in capsys.readouterr().out


def test_a_model_record_names_its_weights_and_threads(tmp_path, noisy):
    out = tmp_path / "out"
    assert main(["denoise", str(noisy), "-o", str(out), "-m", "resnet_5x5_bn_3x3"]) == 0
    record = json.loads(record_path(out / "cam.png").read_text())
    (weights,) = record["weights"]
    assert weights["name"] == "model_resnet_5x5_bn_3x3_grey.safetensors"
    assert weights["sha256"] == file_sha256(weights["path"])
    assert record["environment"]["torch_threads"] >= 1


def test_verify_reports_a_difference_and_a_changed_input(tmp_path, noisy, capsys):
    out = tmp_path / "out"
    assert main(["denoise", str(noisy), "-o", str(out), "-m", "median"]) == 0
    sidecar = record_path(out / "cam.png")
    record = json.loads(sidecar.read_text())
    record["outputs"][0]["sha256"] = "0" * 64  # as if the recorded run had given other bytes
    sidecar.write_text(json.dumps(record))
    write_image(out / "cam.png", np.zeros((64, 64)))
    record["outputs"][0]["sha256"] = file_sha256(out / "cam.png")
    sidecar.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["verify", str(sidecar)]) == 1
    said = capsys.readouterr().out
    assert "differs" in said and "largest pixel difference" in said and "PSNR between the two" in said
    noisy.write_bytes(noisy.read_bytes() + b"\0")
    assert main(["verify", str(sidecar)]) == 1
    assert "the input changed since the record" in capsys.readouterr().err


def test_verify_refuses_records_of_other_commands(tmp_path, capsys):
    path = write_record(tmp_path / "r.json", make_record("train", {}))
    assert main(["verify", str(path)]) == 1
    assert "re-runs bdn denoise and bdn run records only" in capsys.readouterr().err


def test_weights_follow_the_umask(tmp_path):
    import torch

    from bdn.tensorfile import save_tensors, write_checkpoint

    umask = os.umask(0o022)
    os.umask(umask)
    save_tensors(tmp_path / "w.safetensors", {"a": torch.zeros(2)}, {})
    write_checkpoint(tmp_path / "c.pt", {"a": 1})
    for name in ("w.safetensors", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_label_select_and_judge_write_their_records(tmp_path):
    """The quality network's commands leave a record beside what they write (issue 18)."""
    run = tmp_path / "run"
    rng = np.random.default_rng(0)
    lines = ["iteration,file,loss,psnr,ssim,psnr_raw"]
    for k in range(12):
        iteration = 20 * (k + 1)
        write_image(run / "a" / f"{iteration:05d}.png", rng.uniform(0, 1, (40, 40)))
        lines.append(f"{iteration},{iteration:05d}.png,0.1,{20 + k},,")
    (run / "a" / "log.csv").write_text("\n".join(lines) + "\n")
    scores = tmp_path / "scores.txt"
    assert main(["label", "--run-path", str(run), "--output-path", str(scores)]) == 0
    label = json.loads((tmp_path / "scores.txt.json").read_text())
    assert label["command"] == "bdn label" and label["outputs"][0]["path"].endswith("scores.txt")
    assert label["inputs"][0]["path"].endswith("log.csv") and len(label["outputs"][0]["sha256"]) == 64
    table = tmp_path / "wmv.csv"
    assert main(["judge", "--run-path", str(run), "--judge", "wmv", "--output", str(table), "--no-progress"]) == 0
    judged = json.loads((tmp_path / "wmv.csv.json").read_text())
    assert judged["command"] == "bdn judge" and judged["options"]["judge"] == "wmv"
    assert "command_module" not in judged["options"]
    out = tmp_path / "selected"
    argv = ["select", "--run-path", str(run), "--output-path", str(out), "--start-index", "0", "--no-progress"]
    assert main([*argv, "--device", "cpu"]) == 0
    chosen = json.loads((out / "record.json").read_text())
    assert chosen["command"] == "bdn select" and chosen["weights"][0]["name"] == "biqan.safetensors"


def test_a_png_output_carries_its_record_inside(tmp_path):
    from PIL import Image

    image = tmp_path / "in.png"
    write_image(image, skdata.astronaut()[:48, :48] / 255.0)
    assert main(["denoise", str(image), "-o", str(tmp_path / "out.png"), "-m", "median"]) == 0
    text = Image.open(tmp_path / "out.png").text
    assert text["Software"] == f"bdn {bdn.__version__}"
    made = json.loads(text["bdn:record"])
    assert made == {"method": "median", "params": {}, "input_sha256": file_sha256(image), "record": "out.png.json"}
    # The pixels are what they would be without the text.
    plain = tmp_path / "plain.png"
    write_image(plain, bdn.read_image(tmp_path / "out.png")[0])
    assert (bdn.read_image(plain)[0] == bdn.read_image(tmp_path / "out.png")[0]).all()


def test_explain_writes_its_record(tmp_path):
    image = tmp_path / "in.png"
    write_image(image, skdata.camera()[:40, :40] / 255.0)
    out = tmp_path / "explained"
    argv = ["explain", str(image), "--model", "resnet_5x5_bn_3x3", "--pixels", "20,20", "-o", str(out)]
    assert main(argv) == 0
    record = read_record(out / "record.json")
    assert record["command"] == "bdn explain" and record["inputs"][0]["sha256"] == file_sha256(image)
    assert record["outputs"] and all(len(entry["sha256"]) == 64 for entry in record["outputs"])


@pytest.fixture(scope="module")
def dip_run(tmp_path_factory):
    """A two-image bdn run (skip64, 10 iterations, 64x64 pairs) whose records bdn verify re-fits."""
    root = tmp_path_factory.mktemp("dip_run")
    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        clean = rng.uniform(0.2, 0.8, (64, 64, 3))
        write_image(root / "mean" / f"{name}_mean.png", clean)
        write_image(root / "real" / f"{name}_real.png", np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1))
    argv = ["run", "--dataset-real-path", str(root / "real"), "--dataset-mean-path", str(root / "mean")]
    argv += ["--output-path", str(root / "run"), "--net-type", "skip64", "--num-iter", "10", "--save-iter", "5"]
    assert main([*argv, "--threads", "1", "--no-progress"]) == 0
    return root


def test_a_run_records_its_inputs_and_result_and_verify_fits_an_image_again(dip_run, tmp_path, capsys):
    done = json.loads((dip_run / "run" / "a" / "done.json").read_text())
    assert done["result_sha256"] == file_sha256(dip_run / "run" / "a" / "result.png")
    assert done["input_paths"] == {
        "noisy": str(dip_run / "real" / "a_real.png"),
        "clean": str(dip_run / "mean" / "a_mean.png"),
    }
    capsys.readouterr()
    keep = tmp_path / "kept"
    assert main(["verify", str(dip_run / "run" / "run.json"), "--image", "b", "--keep", str(keep)]) == 0
    said = capsys.readouterr().out
    assert "fitting b again" in said and "identical: b fitted again gives the recorded result.png" in said
    assert file_sha256(keep / "run" / "b" / "result.png") == file_sha256(dip_run / "run" / "b" / "result.png")


def test_verify_of_a_run_says_what_differs_and_what_is_missing(dip_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(dip_run / "run", run)
    record = run / "run.json"
    assert main(["verify", str(record)]) == 1  # two finished images: which one?
    assert "give --image ID, one of the 2 finished images (a, b)" in capsys.readouterr().err
    assert main(["verify", str(record), "--image", "c"]) == 1
    assert "--image c: not a finished image" in capsys.readouterr().err

    changed = json.loads(record.read_text())
    changed["options"]["config"]["num_iter"] = 50  # a later bdn run of the folder went further: a ran 10
    record.write_text(json.dumps(changed))
    assert main(["verify", str(record), "--image", "a"]) == 0
    assert "identical: a fitted again" in capsys.readouterr().out
    changed["options"]["config"]["lr"] = 0.05  # as if the recorded fit had used another learning rate
    record.write_text(json.dumps(changed))
    assert main(["verify", str(record), "--image", "a"]) == 1
    said = capsys.readouterr().out
    assert "differs: a: result.png sha256" in said and "largest pixel difference" in said

    done = json.loads((run / "b" / "done.json").read_text())
    del done["result_sha256"]
    (run / "b" / "done.json").write_text(json.dumps(done))
    assert main(["verify", str(record), "--image", "b"]) == 1
    assert "written by an older bdn" in capsys.readouterr().err


def test_verify_of_a_run_refuses_a_changed_input(dip_run, tmp_path, capsys):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(dip_run, root)
    for done_path in (root / "run").glob("*/done.json"):  # point the records at the copied inputs
        done_path.write_text(done_path.read_text().replace(str(dip_run), str(root)))
    (root / "real" / "a_real.png").write_bytes((root / "real" / "a_real.png").read_bytes() + b"\0")
    assert main(["verify", str(root / "run" / "run.json"), "--image", "a"]) == 1
    assert "the noisy input changed since the record" in capsys.readouterr().err
