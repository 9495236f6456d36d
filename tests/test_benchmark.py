"""``tfmm bench`` (:mod:`tfmm.benchmark`): a tiny run writes its files and records; the CLI validates options.

Properties of the records only: nothing here asserts a speed.
"""

from __future__ import annotations

import json
import statistics

import pytest

import tfmm
from tfmm import benchmark
from tfmm.benchmark import runner
from tfmm.cli import _cmd_bench, build_parser, main

pytest.importorskip("jax")
pytest.importorskip("torch")

TINY = benchmark.Grid(assets=(2,), fees=(0.003,), bout_minutes=(60,), batches=(2,), dtypes=("float64",))
MEASUREMENT_FIELDS = {
    "backend", "fee_path", "n_assets", "fee", "bout_days", "minutes", "sets", "bouts", "dtype", "call", "mode",
    "status", "first_call_s", "times_s", "median_s", "pool_minutes", "pool_minutes_per_s",
    "host_peak_rss_delta_bytes", "device_peak_bytes", "estimated_bytes", "array_device", "load_average",
}
ENVIRONMENT_FIELDS = {"device", "device_model", "driver", "cpu_model", "cpu_count", "libraries", "flags", "date", "git",
                      "load_average_start", "load_average_end"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One configuration per backend (jax kernel, torch kernel, reference), 2 repeats, one-hour bouts."""
    out = tmp_path_factory.mktemp("bench")
    result = benchmark.run_benchmark(backends="jax:kernel,torch:kernel,reference", device="cpu", repeats=2, out=out,
                                     grid=TINY, train=False, progress=False, log=None)
    return result, out


def test_tiny_run_writes_json_markdown_and_plots(tiny_run):
    result, out = tiny_run
    stem = result.files["json"].rsplit("/", 1)[-1].removesuffix(".json")
    assert stem.startswith("cpu-")
    for key, suffix in (("json", ".json"), ("markdown", ".md"), ("batch_png", "-batch.png"), ("bout_png", "-bout.png")):
        assert result.files[key] == str(out / f"{stem}{suffix}")
    record = json.loads((out / f"{stem}.json").read_text())
    assert ENVIRONMENT_FIELDS <= set(record["environment"])
    assert record["environment"]["device"] == "cpu" and record["environment"]["libraries"]["tfmm"] == tfmm.__version__
    assert record["settings"]["repeats"] == 2 and record["settings"]["grid_name"] == "custom"
    rows = record["measurements"]
    assert [(r["backend"], r["fee_path"], r["call"]) for r in rows] == [
        ("jax", "kernel", "forward"), ("jax", "kernel", "gradient"), ("torch", "kernel", "forward"),
        ("torch", "kernel", "gradient"), ("reference", None, "forward")]
    for row in rows:
        assert set(row) == MEASUREMENT_FIELDS
        assert row["status"] == "ok", row["status"]
        assert row["mode"] == {"forward": "exact", "gradient": "smooth"}[row["call"]]
    markdown = (out / f"{stem}.md").read_text()
    assert "| bout | batch (sets x bouts) | dtype | jax kernel | torch kernel | reference |" in markdown
    assert "| 60 min | 2 (1x2) | float64 |" in markdown and "## Every case" in markdown
    for key in ("batch_png", "bout_png"):
        with open(result.files[key], "rb") as f:
            assert f.read(8) == PNG_SIGNATURE


def test_throughput_is_pool_minutes_over_the_median_of_the_recorded_times(tiny_run):
    result, _ = tiny_run
    for m in result.measurements:
        assert m.pool_minutes == m.sets * m.bouts * m.minutes == 2 * 60
        assert len(m.times_s) == 2 and all(t > 0 for t in m.times_s) and m.first_call_s > 0
        assert m.median_s == statistics.median(m.times_s)
        assert m.pool_minutes_per_s == pytest.approx(m.pool_minutes / statistics.median(m.times_s), rel=1e-12)
        assert m.host_peak_rss_delta_bytes >= 0 and m.device_peak_bytes is None  # no device memory on the CPU


def test_torch_training_step_is_timed_and_the_reference_skipped():
    size = benchmark.TrainSize(bout_minutes=120, batch_size=2, n_sets=1, extra_steps=1, repeats=1)
    step = runner.measure_train_step("torch", "cpu", size)
    assert step.ok, step.status
    assert step.first_call_s > 0 and len(step.call_times_s) == len(step.longer_call_times_s) == 1
    assert step.step_s == pytest.approx((step.longer_call_times_s[0] - step.call_times_s[0]) / 1)
    assert step.pool_minutes_per_step == 240
    assert runner.measure_train_step("reference", "cpu", size).status.startswith("skipped")


# ------------------------------------------------------------------------------ failures are records


def _case(call="forward", backend="reference", fee_path=None, minutes=60):
    return benchmark.Case(benchmark.BackendPath(backend, fee_path), 2, 0.003, minutes, 1, 1, "float64", call)


def _inputs(case):
    return runner._Inputs()(case)


@pytest.mark.parametrize("exc, status", [
    (MemoryError("no room"), "skipped: out of memory (MemoryError: no room)"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "skipped: out of memory (RuntimeError: CUDA"),
    (ValueError("bad input"), "error: ValueError: bad input"),
])
def test_a_failing_case_is_recorded_not_raised(monkeypatch, exc, status):
    def broken(*args, **kwargs):
        def call():
            raise exc
        return call

    monkeypatch.setattr(runner, "make_call", broken)
    case = _case()
    m = runner.measure(case, _inputs(case), "cpu", repeats=1)
    assert m.status.startswith(status) and m.pool_minutes_per_s is None


def test_a_case_larger_than_memory_is_skipped_before_it_runs(monkeypatch):
    monkeypatch.setattr(benchmark.system, "available_host_bytes", lambda: 1000)
    monkeypatch.setattr(runner, "make_call", lambda *a: pytest.fail("the case ran"))
    case = _case()
    m = runner.measure(case, _inputs(case), "cpu", repeats=1)
    assert m.status.startswith("skipped: out of memory (estimated") and m.times_s == []


def test_time_limits_skip_cases_and_the_run_still_writes_its_files(tmp_path):
    result = benchmark.run_benchmark(backends="torch:kernel,reference", device="cpu", repeats=1, out=tmp_path,
                                     grid=TINY, time_budget_s=1e-9, progress=False, log=None)
    assert result.measurements and all(m.status == "skipped: grid's share of the time budget (7.5e-10 s) spent"
                                       for m in result.measurements)
    assert [t.status for t in result.train_steps] == ["skipped: time budget (1e-09 s) spent",
                                                      "skipped: the reference backend does not train"]
    assert all((tmp_path / p.rsplit("/", 1)[-1]).exists() for p in result.files.values())
    series = runner._Series()
    small, big = _case(minutes=60), _case(minutes=600_000)
    m = benchmark.Measurement.of(small)
    m.record_times(0.1, [0.01])
    series.update(m, small)
    clock = runner._Clock(start=0.0, budget=None)
    assert runner._time_verdict(big, series, clock, 1, max_call_seconds=1.0).startswith("skipped: about 100 s per call")
    assert runner._time_verdict(small, series, clock, 1, max_call_seconds=1.0) is None


# ------------------------------------------------------------------------------------- grid and options


def test_batches_split_into_sets_and_bouts():
    assert [benchmark.split_batch(b) for b in (1, 2, 8, 16, 256, 4096)] == [
        (1, 1), (1, 2), (2, 4), (4, 4), (16, 16), (64, 64)]
    with pytest.raises(ValueError, match="batch=0 is invalid"):
        benchmark.split_batch(0)


def test_backend_paths_by_device_and_explicit_fee_paths():
    def labels(text, device, quick=False):
        return [p.label for p in benchmark.parse_backends(text, device, quick)]

    assert labels("jax,torch,reference", "cpu") == ["jax kernel", "jax scan", "torch kernel", "reference"]
    assert labels("jax,torch,reference", "cpu", quick=True) == ["jax kernel", "torch kernel", "reference"]
    assert labels("jax,torch", "cuda") == ["jax auto", "jax kernel", "jax scan", "torch auto", "torch kernel"]
    assert labels("jax:scan, torch:auto,jax:scan", "cpu") == ["jax scan", "torch auto"]
    for text, message in (("jax,numpy", "unknown backend 'numpy'; allowed jax, torch, reference"),
                          ("jax:fast", "fee path 'fast' of 'jax' is invalid; allowed auto, kernel, scan"),
                          ("reference:kernel", "the reference backend has no fee path option"),
                          ("", "--backends='' is invalid")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            benchmark.parse_backends(text, "cpu")
    with pytest.raises(ValueError, match="--device='tpu' is invalid: allowed one of cpu, cuda"):
        benchmark.parse_backends("jax", "tpu")


def test_cases_run_cheapest_first_without_duplicate_fee_free_paths():
    grid = benchmark.Grid(assets=(2,), fees=(0.0, 0.003), bout_minutes=(1440, 60), batches=(1,), dtypes=("float64",))
    paths = benchmark.parse_backends("jax,torch,reference", "cpu")
    cases = benchmark.make_cases(grid, paths)
    assert [c.pool_minutes for c in cases] == sorted(c.pool_minutes for c in cases)
    assert {c.path.label for c in cases if c.fee == 0} == {"jax kernel", "torch kernel", "reference"}
    assert not [c for c in cases if c.path.backend == "reference" and c.call == "gradient"]
    assert len(cases) == 2 * (3 * 2 - 1 + 4 * 2 - 1)  # two bout lengths x (fee 0: 5 cases, fee 0.3%: 7)
    with pytest.raises(ValueError, match=r"--dtypes=\['float16'\] is invalid"):
        benchmark.Grid(dtypes=("float16",))


# ---------------------------------------------------------------------------------------------- the CLI


def test_bench_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--quick", "--out", "--backends", "--device", "--repeats", "--time-budget"):
        assert option in out
    assert build_parser().parse_args(["bench"]).func is _cmd_bench


@pytest.mark.parametrize("argv, message", [
    (["--backends", "jax,numpy"],
     "tfmm bench: error: --backends: unknown backend 'numpy'; allowed jax, torch, reference"),
    (["--repeats", "0"], "tfmm bench: error: --repeats=0 is invalid: allowed an integer >= 1"),
    (["--batches", "1,x"], "tfmm bench: error: --batches='1,x' is invalid: allowed a comma-separated list of integers"),
    (["--dtypes", "float16"], "tfmm bench: error: --dtypes=['float16'] is invalid"),
    (["--time-budget", "-1"], "tfmm bench: error: time_budget_s (--time-budget)=-1.0 is invalid"),
])
def test_bench_rejects_bad_options_with_one_line(capsys, tmp_path, argv, message):
    code = main(["bench", "--out", str(tmp_path), "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(message) and len(err.strip().splitlines()) == 1


def test_bench_device_must_be_cpu_or_cuda(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--device", "gpu"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'gpu'" in capsys.readouterr().err


def test_bench_command_runs_a_tiny_grid(capsys, tmp_path):
    code = main(["bench", "--backends", "reference", "--device", "cpu", "--assets", "2", "--fees", "0.003",
                 "--bout-days", "0.05", "--batches", "1", "--dtypes", "float64", "--repeats", "1", "--train", "none",
                 "--quiet", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "1 cases measured, 0 skipped, 0 failed" in out
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert [(m["minutes"], m["status"]) for m in record["measurements"]] == [(72, "ok")]
    assert record["settings"]["train_size"] is None
