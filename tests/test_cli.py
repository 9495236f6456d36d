"""The command line: ``tfmm info`` and ``tfmm data`` run through ``tfmm.cli.main``."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata

import numpy as np
import pandas as pd
import pytest

import tfmm
from tfmm.cli import _cmd_data, _cmd_info, build_parser, main

SET_2025 = "1m_2025-05-20_to_2025-08-18"
SET_2021 = "1m_2021-04-02_to_2021-05-14"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_parser_has_one_function_per_subcommand():
    parser = build_parser()
    assert parser.parse_args(["info"]).func is _cmd_info
    args = parser.parse_args(["data", "a.csv", "b.csv", "--gaps", "drop", "--assets", "X,Y"])
    assert (args.func, args.paths, args.gaps, args.assets) == (_cmd_data, ["a.csv", "b.csv"], "drop", "X,Y")
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "--gaps", "interpolate"])


def test_no_command_prints_usage(capsys):
    code, out, err = run(capsys)
    assert code == 2
    assert "usage: tfmm" in err and "info" in err and "data" in err


def test_info_lists_versions_and_backends(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"tfmm {tfmm.__version__}"
    assert f"python {platform.python_version()}" in out
    for name in ("numpy", "numba", "pandas"):
        assert f"{name} {metadata.version(name)}" in lines
    available = tfmm.available_backends()
    assert f"backends: {', '.join(available)}" in out
    backend_lines = {line.split()[0]: line for line in lines if line.startswith("  ")}
    assert set(available) <= set(backend_lines)
    if "jax" in available:
        import jax

        assert jax.__version__ in backend_lines["jax"] and "cpu" in backend_lines["jax"]
    if "torch" in available:
        import torch

        assert torch.__version__ in backend_lines["torch"] and "devices: cpu" in backend_lines["torch"]


def test_info_json(capsys):
    code, out, _ = run(capsys, "info", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["tfmm"] == tfmm.__version__
    assert set(info["backends"]) == set(tfmm.available_backends())
    assert all(details["devices"] for details in info["backends"].values())
    assert info["libraries"]["numpy"] == np.__version__


def test_data_on_the_2021_folder_reports_gaps(capsys, shared_data):
    code, out, err = run(capsys, "data", str(shared_data / SET_2021))
    assert code == 0, err
    raw = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and " step " in line}
    assert set(raw) == {"BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert "61,272 rows" in raw["BTCUSDT"] and "61,278 rows" in raw["SOLUSDT"]
    assert all("gaps 2 (434 missing rows, largest 284)" in line for line in raw.values())
    assert "aligned (gaps=error): not built" in out
    assert "2021-04-20T02:00:00Z .. 2021-04-20T04:29:00Z: 150 missing rows" in out
    assert "2021-04-25T04:01:00Z .. 2021-04-25T08:44:00Z: 284 missing rows" in out
    assert "--gaps ffill" in out and "--gaps drop" in out


def test_data_with_a_gap_policy_and_assets(capsys, shared_data):
    code, out, _ = run(capsys, "data", str(shared_data / SET_2021), "--gaps", "ffill", "--assets", "ETHUSDT,BTCUSDT")
    assert code == 0
    assert "aligned (gaps=ffill):" in out
    assert "assets   ETHUSDT, BTCUSDT" in out
    assert "61,706 from 2021-04-02T00:00:00Z to 2021-05-14T20:25:00Z" in out
    assert "gaps     none" in out
    assert "SOLUSDT" not in out


def test_data_json_on_the_2025_files(capsys, shared_data):
    folder = shared_data / SET_2025
    code, out, _ = run(capsys, "data", "--json", str(folder / "BTCUSDT.csv"), str(folder / "ETHUSDT.csv"))
    assert code == 0
    result = json.loads(out)
    aligned = result["aligned"]
    assert aligned["assets"] == ["BTCUSDT", "ETHUSDT"]
    assert (aligned["rows"], aligned["n_gaps"], aligned["step_seconds"]) == (130_708, 0, 60)
    assert aligned["prices"]["BTCUSDT"]["min"] == 98344.75
    assert result["raw"]["ETHUSDT"]["rows"] == 130_708


def test_data_without_paths_shows_the_bundled_set(capsys):
    code, out, _ = run(capsys, "data")
    assert code == 0
    assert "Binance market data" in out
    assert "130,708 from 2025-05-20T00:00:00Z to 2025-08-18T18:27:00Z" in out
    assert "BTCUSDT" in out and "ETHUSDT" in out


def test_data_names_the_asset_of_a_one_sided_gap(capsys, tmp_path):
    t = 60 * np.arange(8)
    pd.DataFrame({"timestamp": t, "close": np.arange(1.0, 9.0)}).to_csv(tmp_path / "AAA.csv", index=False)
    keep = t != 240
    pd.DataFrame({"timestamp": t[keep], "close": 5.0}).to_csv(tmp_path / "BBB.csv", index=False)
    code, out, _ = run(capsys, "data", str(tmp_path))
    assert code == 0
    assert "1970-01-01T00:04:00Z .. 1970-01-01T00:04:00Z: 1 missing row (BBB)" in out
    code, out, _ = run(capsys, "data", str(tmp_path), "--gaps", "drop")
    assert "7 from 1970-01-01T00:00:00Z" in out
    assert "gaps    1 (1 missing row; largest 1 row, 1970-01-01T00:04:00Z .. 1970-01-01T00:04:00Z)" in out


def test_data_errors_give_status_1(capsys, tmp_path):
    code, out, err = run(capsys, "data", str(tmp_path / "missing.csv"))
    assert code == 1 and out == ""
    assert err.startswith("tfmm data: error: no such file or directory")
    (tmp_path / "AAA.csv").write_text("time,close\n0,1\n")
    code, _, err = run(capsys, "data", str(tmp_path / "AAA.csv"))
    assert code == 1 and "no 'timestamp' column" in err


def test_module_entry_point_without_backends(tmp_path):
    """``python -m tfmm.cli data`` works, and neither importing the CLI nor ``tfmm data`` loads jax or torch."""
    t = 60 * np.arange(4)
    for name in ("AAA", "BBB"):
        pd.DataFrame({"timestamp": t, "close": 1.0}).to_csv(tmp_path / f"{name}.csv", index=False)
    code = (
        "import sys; from tfmm.cli import main; status = main(['data', sys.argv[1]]); "
        "assert 'jax' not in sys.modules and 'torch' not in sys.modules, 'backend imported'; sys.exit(status)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "aligned (gaps=error):" in done.stdout and "4 from" in done.stdout
    done = subprocess.run([sys.executable, "-m", "tfmm.cli", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"tfmm {tfmm.__version__}"
