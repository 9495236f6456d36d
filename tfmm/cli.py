"""The ``tfmm`` command line: ``info``, ``data``, ``simulate``, ``train``, ``evaluate``, ``diagnose``, ``study``,
``bench``, ``sweep``.

Each subcommand NAME has ``_add_NAME(subparsers)``, which declares its arguments, and ``_cmd_NAME(args) -> int``,
which runs it and returns the exit status; :func:`build_parser` calls every function listed in ``_SUBCOMMANDS``.
Commands import what they need (jax, torch) inside their own function, so ``tfmm data`` never loads a backend.
Errors a user can fix (a missing file, a malformed column, a typo in a run file, a diverged run) print one line
on stderr and give exit status 1; Ctrl-C gives 130 and, for ``train``, says how to resume.
``tfmm data`` is a report: gaps found under ``--gaps error`` are listed and the status is still 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import tfmm
from tfmm import data as _data
from tfmm.backend import default_backend_name


def _version(distribution: str) -> str:
    """Installed version of a distribution, or "not installed"."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------------------------------------- tfmm info

_KNOWN_BACKENDS = ("jax", "torch", "reference")


def _jax_details() -> tuple[str, list[str]]:
    import jax

    return jax.__version__, [f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices()]


def _torch_details() -> tuple[str, list[str]]:
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return torch.__version__, devices


def _reference_details() -> tuple[str, list[str]]:
    import numba

    return f"numba {numba.__version__}", [f"cpu ({numba.config.NUMBA_NUM_THREADS} threads)"]


_BACKEND_DETAILS: dict[str, Callable[[], tuple[str, list[str]]]] = {
    "jax": _jax_details, "torch": _torch_details, "reference": _reference_details,
}


def backend_details(name: str) -> dict[str, Any]:
    """``{"version": ..., "devices": [...]}`` of an installed backend, or ``{"error": ...}`` if probing fails."""
    probe = _BACKEND_DETAILS.get(name)
    if probe is None:
        return {"version": "-", "devices": []}
    try:
        version, devices = probe()
    except Exception as exc:  # a broken install must not stop `tfmm info`
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"version": version, "devices": devices}


def _add_info(subparsers: Any) -> None:
    p = subparsers.add_parser("info", help="versions, backends and their devices",
                              description="Print the tfmm, Python and library versions, and each installed "
                                          "backend with its version and devices.")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    available = tfmm.available_backends()
    try:
        default = default_backend_name()
    except ImportError:
        default = None
    info = {
        "tfmm": tfmm.__version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in ("numpy", "numba", "pandas", "pyarrow")},
        "default_backend": default,
        "backends": {name: backend_details(name) for name in available},
        "missing_backends": [name for name in _KNOWN_BACKENDS if name not in available],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"tfmm {info['tfmm']}")
    print(f"python {info['python']} ({info['executable']})")
    print(f"platform {info['platform']}")
    for name, version in info["libraries"].items():
        print(f"{name} {version}")
    print(f"backends: {', '.join(available) or 'none'}" + (f" (default: {default})" if default else ""))
    width = max([9, *(len(n) for n in available)]) + 2
    for name, details in info["backends"].items():
        if "error" in details:
            print(f"  {name:<{width}}unusable: {details['error']}")
        else:
            print(f"  {name:<{width}}{details['version']}  devices: {', '.join(details['devices']) or '-'}")
    for name in info["missing_backends"]:
        extra = "all" if name == "reference" else name
        print(f"  {name:<{width}}not installed (pip install 'tfmm[{extra}]')")
    return 0


# ---------------------------------------------------------------------------------------------- tfmm data


def _add_data(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "data", help="summarise price files (or the bundled data set)",
        description="Summarise price files: each asset's raw series (rows, range, step, gaps), then the assets "
                    "aligned with the --gaps policy. Gaps are reported, never fatal. Without PATH: the bundled "
                    "BTCUSDT/ETHUSDT one-minute data set (Binance market data).",
    )
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="CSV (.csv, .csv.gz) or parquet files with columns timestamp, close; or folders of them")
    p.add_argument("--assets", default=None, help="comma-separated asset names to keep, in this order")
    p.add_argument("--gaps", choices=_data.GAP_POLICIES, default="error",
                   help="alignment policy: error (list the gaps), ffill (forward-fill) or drop (common rows only; "
                        "time then jumps over the gaps)")
    p.add_argument("--layout", choices=_data.LAYOUTS, default="close",
                   help="close: columns timestamp, close (one asset per file); wide: one asset per column")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_data)


def _raw_line(name: str, s: dict[str, Any], width: int) -> str:
    gaps = "none" if s["n_gaps"] == 0 else (
        f"{s['n_gaps']} ({_data.count_rows(s['missing_rows']).replace(' row', ' missing row')}, "
        f"largest {s['largest_gap']['missing_rows']:,})")
    step = "-" if s["step_seconds"] is None else f"{s['step_seconds']} s"
    rows = "row " if s["rows"] == 1 else "rows"
    return f"  {name:<{width}}{s['rows']:>10,} {rows}  {s['first']} .. {s['last']}  step {step}  gaps {gaps}"


def _cmd_data(args: argparse.Namespace) -> int:
    if not args.paths:
        summary = _data.summarize(_data.example_prices())
        if args.json:
            print(json.dumps({"source": "bundled", "aligned": summary}, indent=2))
        else:
            print(_data.format_summary(summary, "bundled example data (Binance market data)"))
        return 0
    assets = None if args.assets is None else [a.strip() for a in args.assets.split(",") if a.strip()]
    series = _data.read_price_files(args.paths, assets, layout=args.layout)
    raw = {name: _data.summarize_series(s) for name, s in series.items()}
    result: dict[str, Any] = {"source": [str(p) for p in args.paths], "raw": raw, "policy": args.gaps,
                              "aligned": None, "gaps": [], "note": None}
    if len(series) < 2:
        result["note"] = "alignment needs at least two assets"
    else:
        try:
            aligned = _data.summarize(_data.align_prices(series, gaps=args.gaps))
            result["aligned"] = aligned
            if aligned["time_jumps"]:
                result["note"] = (f"gaps={args.gaps}: time jumps {aligned['time_jumps']} times over "
                                  f"{aligned['skipped_minutes']:,} missing minutes; the simulator reads each "
                                  f"jump as one minute")
        except _data.PriceGapError as exc:
            result["gaps"] = [g.to_dict() for g in exc.gaps]
            result["note"] = str(exc)
        except _data.SamplingIntervalError as exc:  # a report: say why the files cannot be simulated
            result["note"] = str(exc)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    width = max(len(n) for n in raw) + 2
    print("raw series:")
    for name, s in raw.items():
        print(_raw_line(name, s, width))
    if result["aligned"] is not None:
        print(_data.format_summary(result["aligned"], f"aligned (gaps={args.gaps}):"))
    else:
        note = result["note"].replace('gaps="ffill"', "--gaps ffill").replace('gaps="drop"', "--gaps drop")
        print(f"aligned (gaps={args.gaps}): not built")
        print("\n".join(f"  {line}" for line in note.splitlines()))
    return 0



# ---------------------------------------------------------------------------------------------- run files
#
# simulate, train, evaluate and diagnose read one TOML run file: tables [pool], [strategy], optional
# [smoothing] and [train] (tfmm.to_toml writes them), and [data]: paths = [...] (files or folders; absent
# or "bundled" = the bundled BTC/ETH set), assets, gaps, layout; [run]: backend, start, length, mode, dtype.
# An unknown table or key is an error naming it, its table and the nearest valid name; a value of the
# wrong type is an error too (never truncated: start = 1.7 is refused, not read as 1).

RUN_TABLES = ("data", "run", "pool", "strategy", "smoothing", "train")
DATA_KEYS = ("paths", "assets", "gaps", "layout")
RUN_KEYS = ("backend", "start", "length", "mode", "dtype")


def _check_run_table(path: str, table: str, values: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    from tfmm.specs import check_keys

    if not isinstance(values, dict):
        raise ValueError(f"{path}: [{table}] must be a table, got {type(values).__name__} {values!r}")
    check_keys(table, values, allowed, source=path)
    return dict(values)


def _string_list(path: str, where: str, value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        raise TypeError(f"{path}: {where} must be a string or a list of strings, got {type(value).__name__} "
                        f"{value!r}")
    return items


def _run_integer(path: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{path}: [run] {key} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{path}: [run] {key}={value} is invalid: allowed an integer >= {minimum}")
    return value


def load_run(path: str) -> dict[str, Any]:
    """A run file (``tfmm train`` / ``simulate`` / ``evaluate`` / ``diagnose``, and a sweep's base) validated:
    its tables, with ``prices`` loaded from ``[data]`` (the bundled set by default) and ``run`` checked."""
    from tfmm.specs import load_config

    cfg = load_config(path, tables=RUN_TABLES)
    for key in ("pool", "strategy"):
        if key not in cfg:
            raise ValueError(f"{path}: the run file needs a [{key}] table")
    data_cfg = _check_run_table(path, "data", cfg.get("data", {}), DATA_KEYS)
    run = _check_run_table(path, "run", cfg.get("run", {}), RUN_KEYS)
    for key in ("backend", "mode", "dtype"):
        if key in run and not isinstance(run[key], str):
            raise TypeError(f"{path}: [run] {key} must be a string, got {type(run[key]).__name__} {run[key]!r}")
    if "start" in run:
        _run_integer(path, "start", run["start"], 0)
    if "length" in run:
        _run_integer(path, "length", run["length"], 2)
    for key in ("gaps", "layout"):
        if key in data_cfg and not isinstance(data_cfg[key], str):
            raise TypeError(f"{path}: [data] {key} must be a string, got {type(data_cfg[key]).__name__} "
                            f"{data_cfg[key]!r}")
    assets = _string_list(path, "[data] assets", data_cfg["assets"]) if "assets" in data_cfg else None
    paths = _string_list(path, "[data] paths", data_cfg.get("paths", "bundled"))
    if paths == ["bundled"]:
        prices = _data.example_prices()
        if assets:
            prices = prices.select(assets)
    else:
        prices = _data.load_prices(paths, assets=assets, gaps=data_cfg.get("gaps", "error"),
                                   layout=data_cfg.get("layout", "close"))
    cfg["prices"] = prices
    cfg["run"] = run
    return cfg


def _add_config_args(p: Any, out_default: str | None) -> None:
    p.add_argument("--config", required=True, help="TOML run file ([data], [pool], [strategy], [train], [run])")
    p.add_argument("--out", default=out_default, help="output folder")
    p.add_argument("--backend", default=None, help="backend name (default: [run] backend, else jax if installed)")


def _backend_name(args: argparse.Namespace, run: dict[str, Any]) -> str:
    return args.backend or run.get("backend") or default_backend_name()


def _write_json(path: Any, obj: Any) -> None:
    """Strict JSON: NaN and infinities are written as null (``json.loads`` and other readers accept it)."""
    from tfmm.training import write_json

    write_json(path, obj)


def _check_writable(out: Path) -> None:
    """Create ``out`` and write a probe file there, so a run never fails at the end for want of a folder."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".tfmm-write-check-"):
            pass
    except OSError as exc:
        raise PermissionError(f"--out {out} is not writable ({exc.strerror or exc})") from None


def _add_simulate(subparsers: Any) -> None:
    p = subparsers.add_parser("simulate", help="simulate a pool from a run file",
                              description="Simulate the pool of a run file ([run] start, length, mode) and write "
                                          "simulation.parquet (value, fees, reserves, weights, prices per minute) "
                                          "and metrics.json to --out.")
    _add_config_args(p, "runs/simulate")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    cfg = load_run(args.config)
    run = cfg["run"]
    out = Path(args.out)
    _check_writable(out)  # before the simulation, not after it
    with tfmm.use(_backend_name(args, run)):
        sim = tfmm.simulate(cfg["prices"], cfg["strategy"], cfg["pool"], start=run.get("start", 0),
                            length=run.get("length"), mode=run.get("mode", "exact"), smoothing=cfg.get("smoothing"),
                            dtype=run.get("dtype", "float64"))
        metrics = tfmm.metrics(sim)
    sim.to_pandas().to_parquet(out / "simulation.parquet")
    _write_json(out / "metrics.json", metrics)
    (out / "config.toml").write_text(Path(args.config).read_text())
    width = max(len(k) for k in metrics)
    for k, v in metrics.items():
        print(f"{k:<{width}}  {v: .6g}")
    print(f"wrote {out / 'simulation.parquet'} and {out / 'metrics.json'}")
    return 0


def _add_train(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train a strategy from a run file",
                              description="Train the strategy of a run file with its [train] table; the run "
                                          "folder gets config, log CSV, checkpoints, best parameters, metrics "
                                          "and plots.")
    _add_config_args(p, "runs/train")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (same run file required)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run that --out already holds (default: refuse)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    cfg = load_run(args.config)
    config = cfg.get("train", tfmm.TrainConfig())
    with tfmm.use(_backend_name(args, cfg["run"])):
        result = tfmm.train(cfg["prices"], cfg["strategy"], cfg["pool"], config, run_dir=args.out,
                            resume=args.out if args.resume else None, progress=not args.quiet,
                            overwrite=args.overwrite)
    if result.extras.get("selected_on") == "train":
        print("note: no validation period (split has validation 0): the best parameters were selected on the "
              "training period itself")
    print(f"best set {result.best_set}; validation {config.objective} = "
          f"{result.validation.get(config.objective, float('nan')):.6g}; test {config.objective} = "
          f"{result.test.get(config.objective, float('nan')):.6g}")
    print(f"run folder: {result.run_dir}")
    return 0


def _add_evaluate(subparsers: Any) -> None:
    p = subparsers.add_parser("evaluate", help="exact-mode metrics of a strategy vs HODL and a balancer",
                              description="Exact-mode metrics of the run file's strategy (or --params, e.g. a "
                                          "run's best_params.toml) on [run] start/length, against HODL and an "
                                          "equal-weight balancer pool with the same fees.")
    _add_config_args(p, None)
    p.add_argument("--params", default=None, help="TOML file with a [strategy] table to evaluate instead")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tfmm.plots import baseline_simulations
    from tfmm.specs import load_config

    cfg = load_run(args.config)
    if args.params:
        params_file = load_config(args.params)
        if "strategy" not in params_file:
            raise ValueError(f"{args.params}: no [strategy] table to evaluate")
        strategy = params_file["strategy"]
    else:
        strategy = cfg["strategy"]
    run, prices, pool = cfg["run"], cfg["prices"], cfg["pool"]
    start = run.get("start", 0)
    if start > prices.n_rows - 2:
        raise ValueError(f"{args.config}: [run] start={start} is invalid: prices have {prices.n_rows} rows")
    length = run.get("length") or prices.n_rows - start
    if args.out:
        _check_writable(Path(args.out))
    with tfmm.use(_backend_name(args, run)):
        rows = {strategy.name: tfmm.metrics(tfmm.simulate(prices, strategy, pool, start=start, length=length))}
        for name, sim in baseline_simulations(prices, pool, start, length, prices.n_assets).items():
            rows[name] = tfmm.metrics(sim)
    names = list(next(iter(rows.values())))
    print(f"{'metric':<28}" + "".join(f"{k:>22}" for k in rows))
    for m in names:
        print(f"{m:<28}" + "".join(f"{rows[k][m]:>22.6g}" for k in rows))
    if args.out:
        _write_json(Path(args.out) / "evaluation.json", rows)
    return 0


def _add_diagnose(subparsers: Any) -> None:
    p = subparsers.add_parser("diagnose", help="check gradients and smoothing of a run file's strategy",
                              description="Autodiff vs central finite differences on one bout, smooth-minus-exact "
                                          "objective gap, gradient-norm statistics over a batch of bouts, and "
                                          "gate/selection boundary statistics, printed as tables.")
    _add_config_args(p, None)
    p.add_argument("--bouts", type=int, default=16, help="bouts for the gradient-norm statistics")
    p.add_argument("--objective", default=None, help="objective (default: [train] objective or daily_log_sharpe)")
    p.set_defaults(func=_cmd_diagnose)


def _cmd_diagnose(args: argparse.Namespace) -> int:
    cfg = load_run(args.config)
    run = cfg["run"]
    train_cfg = cfg.get("train")
    objective = args.objective or (train_cfg.objective if train_cfg else "daily_log_sharpe")
    smoothing = cfg.get("smoothing") or (train_cfg.smoothing if train_cfg else None)
    with tfmm.use(_backend_name(args, run)):
        report = tfmm.diagnose(cfg["prices"], cfg["strategy"], cfg["pool"], start=run.get("start"),
                               length=run.get("length"), objective=objective, smoothing=smoothing,
                               n_bouts=args.bouts)
    print(report)
    return 0


# ---------------------------------------------------------------------------------------------- tfmm study

STUDIES = ("stability",)


def _add_study(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "study", help="reproducible studies (stability: training from many seeds under several configurations)",
        description="stability: trains the same strategy from N initialisations under the naive, stabilised and "
                    "ablation configurations on real data and writes results.json, table.md, table.csv and "
                    "curves PNGs (bench/study_stability.py; needs a source checkout with bench/).")
    p.add_argument("study", choices=STUDIES, help="which study")
    p.add_argument("--quick", action="store_true", help="small version (under 5 minutes)")
    p.add_argument("--out", default="docs/stability", help="output folder (default docs/stability)")
    p.add_argument("--n-seeds", type=int, default=None, help="runs per configuration (default 32; quick 8)")
    p.add_argument("--cases", nargs="*", default=None, help="subset of the study's cases")
    p.add_argument("--configs", nargs="*", default=None, help="subset of the study's configurations")
    p.set_defaults(func=_cmd_study)


def _study_module() -> Any:
    """bench/study_stability.py of the source checkout this tfmm is imported from."""
    import importlib.util

    path = Path(tfmm.__file__).resolve().parent.parent / "bench" / "study_stability.py"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: tfmm study runs from a source checkout (bench/ beside tfmm/)")
    spec = importlib.util.spec_from_file_location("tfmm_study_stability", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cmd_study(args: argparse.Namespace) -> int:
    if args.n_seeds is not None and args.n_seeds < 1:
        raise ValueError(f"--n-seeds={args.n_seeds} is invalid: allowed an integer >= 1")
    _check_writable(Path(args.out))
    study = _study_module()
    study.run_study(args.out, quick=args.quick, n_seeds=args.n_seeds, cases=args.cases, configs=args.configs,
                    log=lambda line: print(line, flush=True))
    return 0


# ---------------------------------------------------------------------------------------------- tfmm bench


def _add_bench(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench", help="throughput per backend and fee path (pool-minutes per second), memory, compile time",
        description="Time tfmm.simulate (forward) and tfmm.value_and_grad (forward + gradient) over a grid of "
                    "assets, fees, bout lengths, batches and dtypes for each backend and fee path, plus one "
                    "tfmm.train step per backend; write <device>.json, <device>.md and PNG plots to --out. "
                    "Cases that would not fit in memory, or take longer than --max-call-seconds per call, are "
                    "recorded as skipped. Exit status 1 if a case failed (its error is in the results).")
    p.add_argument("--quick", action="store_true",
                   help="small grid: 2 assets, fee 0.3%%, 1- and 30-day bouts, batches 1 and 16 (files <device>-quick.*)")
    p.add_argument("--out", default="bench/results", help="output folder (default bench/results)")
    p.add_argument("--backends", default="jax,torch,reference",
                   help="comma-separated backends, each optionally with a fee path, e.g. jax:scan,torch "
                        "(default jax,torch,reference: on the CPU jax kernel and scan, torch kernel)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where jax and torch arrays live (default: cuda when a GPU is visible)")
    p.add_argument("--repeats", type=int, default=3, help="warm calls per case; the median is reported (default 3)")
    p.add_argument("--assets", default=None, help="override the grid: numbers of assets, e.g. 2,3,5")
    p.add_argument("--fees", default=None, help="override the grid: fees as fractions, e.g. 0,0.003")
    p.add_argument("--bout-days", default=None, help="override the grid: bout lengths in days, e.g. 1,30,365")
    p.add_argument("--batches", default=None, help="override the grid: batch sizes (sets x bouts), e.g. 1,16,256")
    p.add_argument("--dtypes", default=None, help="override the grid: float64,float32")
    p.add_argument("--max-call-seconds", type=float, default=None,
                   help="skip cases extrapolated to take longer per call (default 30 with --quick, else 60)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds: what would start later is recorded as skipped (the grid gets 75%% of it "
                        "when training steps follow)")
    p.add_argument("--train", choices=("quick", "full", "none"), default=None,
                   help="size of the timed tfmm.train step per backend: quick (2 sets x 4 bouts of 3 days), full "
                        "(4 x 8 of 10 days) or none (default: quick with --quick, else full)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-case lines")
    p.set_defaults(func=_cmd_bench)


def _number_list(option: str, text: str | None, kind: Callable[[str], Any]) -> list[Any] | None:
    """``"1,16,256"`` -> [1, 16, 256]; None stays None; a malformed item is a ValueError naming the option."""
    if text is None:
        return None
    try:
        return [kind(item) for item in text.split(",")]
    except ValueError:
        raise ValueError(f"--{option}={text!r} is invalid: allowed a comma-separated list of "
                         f"{'integers' if kind is int else 'numbers'}") from None


def _cmd_bench(args: argparse.Namespace) -> int:
    from tfmm import benchmark

    benchmark.parse_backends(args.backends, args.device or "cpu")  # a typo fails before anything loads
    days = _number_list("bout-days", args.bout_days, float)
    grid = (benchmark.QUICK_GRID if args.quick else benchmark.FULL_GRID).with_overrides(
        assets=_number_list("assets", args.assets, int), fees=_number_list("fees", args.fees, float),
        bout_minutes=None if days is None else [round(d * benchmark.DAY) for d in days],
        batches=_number_list("batches", args.batches, int),
        dtypes=None if args.dtypes is None else [d.strip() for d in args.dtypes.split(",")])
    _check_writable(Path(args.out))
    result = benchmark.run_benchmark(
        quick=args.quick, backends=args.backends, device=args.device, repeats=args.repeats, out=args.out, grid=grid,
        max_call_seconds=args.max_call_seconds, time_budget_s=args.time_budget,
        train=True if args.train is None else args.train,
        progress=not args.quiet, log=None if args.quiet else print)
    counts = {"ok": 0, "skipped": 0, "error": 0}
    for m in result.measurements:
        counts["ok" if m.ok else m.status.split(":")[0]] += 1
    print(f"{counts['ok']} cases measured, {counts['skipped']} skipped, {counts['error']} failed in "
          f"{result.wall_s:.0f} s; wrote {', '.join(result.files.values())}")
    if result.errors:
        print(f"tfmm bench: {len(result.errors)} case(s) failed: see the status column of {result.files['markdown']}",
              file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------- tfmm sweep


def _add_sweep(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sweep", help="hyper-parameter sweep of a run file on Ray Tune (needs tfmm[sweep])",
        description="Train many variants of a base run file over a search space (sweep file: [sweep], [space]; "
                    "docs/sweep.md) with Ray Tune: one training run folder per trial in --out/trials, a results "
                    "table (results.parquet, results.md) and plots. Local Ray on this machine's cores unless "
                    "--address joins a cluster. Failed trials are listed on stderr and in the table.")
    p.add_argument("--config", required=True, help="sweep file (TOML: [sweep] base = run file, [space.*])")
    p.add_argument("--out", required=True, help="sweep folder, e.g. sweeps/NAME")
    p.add_argument("--address", default=None, help="join this Ray cluster (ray.init(address=...)) instead of "
                                                   "starting a local one")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out: ended trials are kept, the others run (same sweep file)")
    p.add_argument("--quiet", action="store_true", help="no per-trial lines (failures are still reported)")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from tfmm.sweep import sweep

    try:
        result = sweep(args.config, args.out, address=args.address, resume=args.resume, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"tfmm sweep: interrupted; the trials that ended are kept in {args.out}; resume with: tfmm sweep "
              f"--config {args.config} --out {args.out} --resume", file=sys.stderr)
        return 130
    counts = ", ".join(f"{result.count(s)} {s}" for s in ("finished", "stopped", "failed") if result.count(s))
    print(f"{counts} in {result.wall_time_s:.0f} s; wrote {Path(args.out) / 'results.md'} and "
          f"{Path(args.out) / 'results.parquet'}")
    if result.best is None:
        print("tfmm sweep: no trial finished (errors above and in results.md)", file=sys.stderr)
        return 1
    best = result.best
    print(f"best: trial {best['trial']}: validation {result.metric} = {best[f'validation_{result.metric}']:.6g}, "
          f"test {result.metric} = {best[f'test_{result.metric}']:.6g}; run folder {result.best_run_dir}")
    return 0


# ---------------------------------------------------------------------------------------------- entry point

_SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (_add_info, _add_data, _add_simulate, _add_train, _add_evaluate, _add_diagnose,
                                                       _add_study, _add_bench, _add_sweep)


def build_parser() -> argparse.ArgumentParser:
    """The ``tfmm`` argument parser, one subparser per entry of ``_SUBCOMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="tfmm", description="Differentiable simulator of Temporal Function Market Maker pools.")
    parser.add_argument("--version", action="version", version=f"tfmm {tfmm.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


# Errors a user can cause: bad input (ValueError, TypeError, KeyError), files (OSError), a missing
# backend (ImportError), a diverged run (TrainingDivergedError, an ArithmeticError). They print one line
# (a list of gaps follows on indented lines) and give status 1; Ctrl-C gives 130. Anything else is a bug
# and keeps its traceback. TFMM_TRACEBACK=1 shows the traceback of user errors too.
USER_ERRORS = (ValueError, TypeError, KeyError, OSError, ImportError, ArithmeticError)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return f"missing key {exc.args[0]!r}"
    text = str(exc) or type(exc).__name__
    lines = text.splitlines()
    return "\n".join([lines[0]] + [f"  {line.strip()}" for line in lines[1:]])


def _interrupted(args: argparse.Namespace, exc: KeyboardInterrupt) -> str:
    from tfmm.training import CHECKPOINT

    text = f"tfmm {args.command}: interrupted"
    step = getattr(exc, "step", None)
    if step is not None:
        text += f" at step {step}"
    if args.command == "train" and args.out and (Path(args.out) / CHECKPOINT).exists():
        ckpt = getattr(exc, "checkpoint_step", None)
        at = f" (last checkpoint: step {ckpt})" if ckpt is not None else ""
        text += (f"; resume with --resume: tfmm train --config {args.config} --out {args.out} --resume{at}")
    return text


def main(argv: list[str] | None = None) -> int:
    """Run ``tfmm`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status: 0, 1 for an error
    the user can fix (one line on stderr, no traceback), 2 for usage, 130 for Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt as exc:
        print(_interrupted(args, exc), file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if os.environ.get("TFMM_TRACEBACK"):
            traceback.print_exc()
        print(f"tfmm {args.command}: error: {_error_text(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
