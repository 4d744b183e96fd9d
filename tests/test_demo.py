"""`bdn demo` writes its figure, table and images, and every method beats the noisy input."""

import pandas as pd

from bdn.demo import run_demo


def test_demo_outputs(tmp_path, capsys):
    table = run_demo(tmp_path, methods=["median", "adaptive_wiener"], progress=False)
    for name in ("demo.png", "table.csv", "table.md", "astronaut_median.png", "camera_noisy.png"):
        assert (tmp_path / name).is_file(), name
    assert list(table.columns) == ["image", "method", "psnr", "ssim", "seconds"]
    assert len(table) == 2 * 3
    on_disk = pd.read_csv(tmp_path / "table.csv")
    assert on_disk.psnr.round(6).tolist() == table.psnr.round(6).tolist()
    for image, group in table.groupby("image"):
        noisy = group.set_index("method").psnr["noisy"]
        assert 19.5 < noisy < 21.5, image  # sigma 25: 20.2 dB before clipping to [0,1] lifts it a little
        assert (group.set_index("method").psnr.drop("noisy") > noisy + 3).all(), image
    assert "adaptive_wiener" in capsys.readouterr().out


def test_demo_runs_dip_with_its_curve(tmp_path, monkeypatch, torch_one_thread):
    import bdn.dip.denoise as dip_denoise

    # The default fit, cut to 40 iterations so the test takes seconds (the real demo runs it to its stop).
    monkeypatch.setitem(dip_denoise.DEFAULT_ITERATIONS, "none", 40)
    table = run_demo(tmp_path, methods=["median", "dip"], progress=False)
    for name in ("dip_curve.png", "astronaut_c128_dip.png", "astronaut_c128_median.png", "demo.png"):
        assert (tmp_path / name).is_file(), name
    dip = table[table.method == "dip"].iloc[0]
    assert dip["image"] == "astronaut_c128" and dip["iterations"] == 40
    assert 20 <= dip["best_snapshot"] <= 40 and dip["best_snapshot_psnr"] > 10
    assert set(table[table.image == "astronaut_c128"].method) == {"noisy", "dip", "median"}
    assert set(table.image) == {"astronaut", "camera", "astronaut_c128"}
