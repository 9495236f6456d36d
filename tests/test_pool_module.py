"""tfmm.torch.PoolModule: a pool as a torch layer; equal to JAX, torch.func, torch.compile, training, examples."""

from __future__ import annotations

import copy
import io
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tfmm  # noqa: E402
import tfmm.torch  # noqa: E402
from tfmm.torch import PoolModule  # noqa: E402

DAY = 1440
LENGTH = 3 * DAY
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scenario():
    prices = tfmm.synthetic_prices(n_assets=2, n_minutes=5 * DAY, seed=3)
    pool = tfmm.Pool(fee=0.003, chunk_period=60)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=1, k_per_day=20, chunk_period=60)
    return prices, pool, strategy


def _grads(module):
    return {k: p.grad.detach().clone() for k, p in module.params.items()}


def test_import_tfmm_does_not_import_torch():
    code = "import sys, tfmm; assert 'torch' not in sys.modules; import tfmm.torch; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_params_are_a_parameter_dict(scenario):
    _, pool, strategy = scenario
    module = PoolModule(strategy, pool)
    assert isinstance(module.params, torch.nn.ParameterDict)
    assert sorted(module.params.keys()) == sorted(strategy.params)
    for k, p in module.params.items():
        assert isinstance(p, torch.nn.Parameter) and p.dtype == torch.float64 and p.requires_grad
        np.testing.assert_array_equal(p.detach().numpy(), strategy.params[k])
    assert sorted(n for n, _ in module.named_parameters()) == ["params.log_k", "params.logit_lambda"]


@pytest.mark.parametrize("mode", ["exact", "smooth"])
def test_backward_equals_jax(scenario, mode):
    """loss.backward() through the module equals JAX's gradient of the same objective (float64)."""
    pytest.importorskip("jax")
    prices, pool, strategy = scenario
    module = PoolModule(strategy, pool, mode=mode)
    starts = [0, 600, 1400]
    value = module(prices, torch.tensor(starts), LENGTH)
    assert value.shape == () and value.dtype == torch.float64 and value.requires_grad
    value.backward()
    with tfmm.use("jax"):
        ref_value, ref_grads = tfmm.value_and_grad(prices, strategy, pool, start=np.asarray(starts), length=LENGTH,
                                                   mode=mode)
    # the same math on two backends (fused fee kernel on both): they differ by rounding only
    np.testing.assert_allclose(value.item(), float(ref_value), rtol=1e-8)
    grads = _grads(module)
    for k in strategy.params:
        np.testing.assert_allclose(grads[k].numpy(), np.asarray(ref_grads[k]), rtol=1e-8, atol=1e-12)


def test_torch_func_grad_and_vmap_over_starts(scenario):
    """functional_call + torch.func.grad equals backward; vmap over starts equals the batched call."""
    prices, pool, strategy = scenario
    module = PoolModule(strategy, pool, mode="exact")
    starts = torch.tensor([0, 600, 1400])
    batched = module(prices, starts, LENGTH)
    batched.backward()
    ref = _grads(module)
    params = {f"params.{k}": v.detach() for k, v in module.params.items()}

    def objective(p, start):
        return torch.func.functional_call(module, p, (prices, start, LENGTH))

    grads = torch.func.grad(objective)(params, starts)
    for k in strategy.params:
        np.testing.assert_allclose(grads[f"params.{k}"].numpy(), ref[k].numpy(), rtol=1e-12, atol=1e-15)
    per_start = torch.func.vmap(objective, in_dims=(None, 0))(params, starts)
    assert per_start.shape == (3,)
    np.testing.assert_allclose(per_start.mean().item(), batched.item(), rtol=1e-12)
    per_start_grads = torch.func.vmap(torch.func.grad(objective), in_dims=(None, 0))(params, starts)
    for k in strategy.params:
        np.testing.assert_allclose(per_start_grads[f"params.{k}"].mean(0).numpy(), ref[k].numpy(), rtol=1e-10,
                                   atol=1e-14)
    # per-bout parameters (a network's output: one parameter set per start) through vmap over both
    stacked = {k: torch.stack([v, v + 0.05 * (i + 1)]) for i, (k, v) in enumerate(params.items())}
    paired = torch.func.vmap(objective)(stacked, starts[:2])
    for i in range(2):
        single = objective({k: v[i] for k, v in stacked.items()}, int(starts[i]))
        np.testing.assert_allclose(paired[i].item(), single.item(), rtol=1e-12)


def test_parameter_sets(scenario):
    prices, pool, _ = scenario
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=1, k_per_day=20, chunk_period=60,
                                              n_sets=2)
    strategy = strategy.with_params({k: v + np.array([[0.0], [0.3]]) for k, v in strategy.params.items()})
    module = PoolModule(strategy, pool)
    assert module.params["log_k"].shape == (2, 2)
    values = module(prices, 60, LENGTH)
    assert values.shape == (2,)
    for i in range(2):
        single = PoolModule(strategy.param_set(i), pool)(prices, 60, LENGTH)
        np.testing.assert_allclose(values[i].item(), single.item(), rtol=1e-12)


@pytest.mark.parametrize("mode", ["exact", "smooth"])
def test_simulate_equals_jax_and_is_differentiable(scenario, mode):
    pytest.importorskip("jax")
    prices, pool, strategy = scenario
    module = PoolModule(strategy, pool, mode=mode)
    sim = module.simulate(prices, 30, 2 * DAY)
    assert sim.backend == "torch" and sim.mode == mode and isinstance(sim.values, torch.Tensor)
    with tfmm.use("jax"):
        ref = tfmm.simulate(prices, strategy, pool, start=30, length=2 * DAY, mode=mode)
    np.testing.assert_array_equal(sim.timestamps, ref.timestamps)
    for name in ("reserves", "weights", "values", "trades", "fees"):
        np.testing.assert_allclose(getattr(sim, name).detach().numpy(), np.asarray(getattr(ref, name)),
                                   rtol=1e-10, atol=1e-9, err_msg=name)
    sim.values[-1].backward()
    for k, g in _grads(module).items():
        assert torch.isfinite(g).all() and (g != 0).any(), k
    with torch.no_grad():  # tfmm.metrics reads numpy: a simulation without grad
        metrics = tfmm.metrics(module.simulate(prices, 30, 2 * DAY))
    with tfmm.use("jax"):
        ref_metrics = tfmm.metrics(ref)
    np.testing.assert_allclose(metrics["returns_over_hodl"], ref_metrics["returns_over_hodl"], rtol=1e-9)
    # a batch of starts keeps the starts axis; exact mode can be asked for on a smooth module
    batch = module.simulate(prices, torch.tensor([0, 60]), 2 * DAY, mode="exact")
    assert batch.values.shape == (2, 2 * DAY - 1) and batch.mode == "exact"


def test_state_dict_round_trip(scenario):
    prices, pool, strategy = scenario
    module = PoolModule(strategy, pool)
    with torch.no_grad():
        module.params["log_k"].add_(torch.tensor([0.3, -0.2], dtype=torch.float64))
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    other = PoolModule(strategy, pool)
    other.load_state_dict(torch.load(buffer))
    for k in strategy.params:
        assert torch.equal(other.params[k], module.params[k])
    assert other(prices, 60, LENGTH).item() == module(prices, 60, LENGTH).item()
    assert list(module.state_dict()) == ["params.log_k", "params.logit_lambda"]
    clone = copy.deepcopy(module)  # the scenario cache (closures) is not copied
    assert clone(prices, 60, LENGTH).item() == module(prices, 60, LENGTH).item()


def test_to_strategy_round_trip(scenario):
    pytest.importorskip("jax")
    prices, pool, _ = scenario
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=1, k_per_day=20, chunk_period=60,
                                              initial_weights=[0.6, 0.4], beta=0.7, max_memory_days=30)
    module = PoolModule(strategy, pool, mode="exact")
    with torch.no_grad():
        module.params["logit_lambda"].add_(torch.tensor([0.1, -0.1], dtype=torch.float64))
    out = module.to_strategy()
    assert isinstance(out, tfmm.Strategy)
    assert (out.name, out.beta, out.max_memory_days, out.chunk_period) == ("momentum", 0.7, 30.0, 60)
    np.testing.assert_array_equal(out.initial_weights, [0.6, 0.4])
    for k, p in module.params.items():
        np.testing.assert_array_equal(out.params[k], p.detach().numpy())
    # the strategy reproduces the module's objective on another backend, and rebuilds an equal module
    with tfmm.use("jax"):
        value, _ = tfmm.value_and_grad(prices, out, pool, start=60, length=LENGTH, mode="exact")
    np.testing.assert_allclose(float(value), module(prices, 60, LENGTH).item(), rtol=1e-8)
    again = PoolModule(out, pool)
    for k in out.params:
        assert torch.equal(again.params[k], module.params[k])
    module.load_strategy(strategy)
    np.testing.assert_array_equal(module.params["logit_lambda"].detach().numpy(), strategy.params["logit_lambda"])


def test_float32_mode(scenario):
    """module.float() simulates in float32: float32 outputs and gradients, close to float64.

    Tolerances (measured: pool values 1.6e-7 relative, weights 3e-7, objective 2e-5 relative, gradients
    2e-3 of the largest component): the prices and every estimator are rounded to float32 (2^-24 = 6e-8
    relative per operation), which the pool values carry over to a few ulp; the daily log Sharpe ratio of
    two or three daily returns divides a mean by a standard deviation of order 1e-2, amplifying that rounding
    about a hundredfold; its gradient adds the cancellation between assets (log_k's gradient is a small
    difference of large terms)."""
    prices, pool, strategy = scenario
    module = PoolModule(strategy, pool, mode="smooth")
    starts = torch.tensor([0, 600, 1400])
    v64 = module(prices, starts, LENGTH)
    v64.backward()
    g64 = _grads(module)
    s64 = module.simulate(prices, starts, LENGTH)
    module.float()
    module.zero_grad()
    assert all(p.dtype == torch.float32 for p in module.parameters())
    v32 = module(prices, starts, LENGTH)
    assert v32.dtype == torch.float32
    v32.backward()
    g32 = _grads(module)
    s32 = module.simulate(prices, starts, LENGTH)
    assert s32.values.dtype == torch.float32 and s32.weights.dtype == torch.float32
    np.testing.assert_allclose(s32.values.detach().double().numpy(), s64.values.detach().numpy(), rtol=2e-6)
    np.testing.assert_allclose(s32.weights.detach().double().numpy(), s64.weights.detach().numpy(), atol=3e-6)
    np.testing.assert_allclose(v32.item(), v64.item(), rtol=2e-4)
    for k in g64:
        assert g32[k].dtype == torch.float32
        scale = g64[k].abs().max().item()
        np.testing.assert_allclose(g32[k].double().numpy(), g64[k].numpy(), atol=2e-2 * scale, rtol=0)
    module.double()
    np.testing.assert_allclose(module(prices, starts, LENGTH).item(), v64.item(), rtol=1e-6)


def test_adam_steps_improve_the_training_objective(scenario):
    prices, pool, strategy = scenario
    module = PoolModule(strategy, pool, mode="smooth")
    starts = torch.tensor([0, 480, 960, 1440])
    opt = torch.optim.Adam(module.parameters(), lr=0.1)
    with torch.no_grad():
        before = module(prices, starts, LENGTH).item()
    for _ in range(6):
        opt.zero_grad()
        loss = -module(prices, starts, LENGTH)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = module(prices, starts, LENGTH).item()
    assert math.isfinite(after) and after > before + 0.1, (before, after)
    module.to_strategy()  # still valid parameters


def test_scenario_cache(scenario, monkeypatch):
    prices, pool, strategy = scenario
    calls = []
    original = tfmm.objective_fn

    def counting(*args, **kwargs):
        calls.append(kwargs.get("dtype"))
        return original(*args, **kwargs)

    monkeypatch.setattr(tfmm, "objective_fn", counting)
    module = PoolModule(strategy, pool)
    for start in (0, 60, torch.tensor([0, 60])):
        module(prices, start, LENGTH)
    assert calls == ["float64"]  # one validation for three calls
    module.float()
    module(prices, 0, LENGTH)
    assert calls == ["float64", "float32"]
    module.double()
    tensor_prices = torch.tensor(prices.values)
    module(tensor_prices, 0, LENGTH)
    module(tensor_prices, 0, LENGTH)
    assert len(calls) == 3
    before = module(tensor_prices, 0, LENGTH).item()
    tensor_prices[:, 0] *= 1.5  # an in-place change is seen (version counter)
    changed = module(tensor_prices, 0, LENGTH).item()
    assert len(calls) == 4 and changed != before
    np.testing.assert_allclose(before, module(prices, 0, LENGTH).item(), rtol=1e-12)  # tensor == Prices input
    module.clear_cache()
    module(prices, 0, LENGTH)
    assert len(calls) == 5


def test_to_device_and_dtype_methods(scenario):
    prices, pool, strategy = scenario
    module = PoolModule(strategy, pool).to("cpu")
    assert module.params["log_k"].device.type == "cpu"
    assert "momentum" in repr(module)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_parameters_compute_on_cpu_and_come_back(scenario):
    prices, pool, strategy = scenario
    cpu = PoolModule(strategy, pool)
    expected = cpu(prices, 60, LENGTH)
    expected.backward()
    module = PoolModule(strategy, pool).to("cuda")
    value = module(torch.tensor(prices.values, device="cuda"), torch.tensor(60, device="cuda"), LENGTH)
    assert value.device.type == "cuda"
    value.backward()
    for k, p in module.params.items():
        assert p.grad.device.type == "cuda"
        np.testing.assert_allclose(p.grad.cpu().numpy(), cpu.params[k].grad.numpy(), rtol=1e-12)
    sim = module.simulate(prices, 60, LENGTH)
    assert sim.values.device.type == "cuda"


def test_errors_name_the_argument(scenario):
    prices, pool, strategy = scenario
    with pytest.raises(TypeError, match="strategy"):
        PoolModule("momentum", pool)
    with pytest.raises(TypeError, match="pool"):
        PoolModule(strategy, {"fee": 0.003})
    with pytest.raises(ValueError, match="objective"):
        PoolModule(strategy, pool, objective="sharp")
    with pytest.raises(ValueError, match="mode"):
        PoolModule(strategy, pool, mode="fast")
    with pytest.raises(TypeError, match="smoothing"):
        PoolModule(strategy, pool, smoothing={"gate_temperature": 1.0})
    with pytest.raises(ValueError, match="trainable"):
        PoolModule(tfmm.Strategy("hodl", initial_weights=[0.5, 0.5]), pool)
    with pytest.raises(ValueError, match="chunk_period"):
        PoolModule(strategy, tfmm.Pool(fee=0.003, chunk_period=1440))
    module = PoolModule(strategy, pool)
    with pytest.raises(TypeError, match="start"):
        module(prices, 1.5, LENGTH)
    with pytest.raises(TypeError, match="start"):
        module(prices, torch.tensor([0.0, 60.0]), LENGTH)
    with pytest.raises(TypeError, match="start"):
        module(prices, True, LENGTH)
    with pytest.raises(ValueError, match="start"):
        module(prices, torch.tensor([[0, 60]]), LENGTH)
    with pytest.raises(ValueError, match="start"):
        module(prices, 5 * DAY, LENGTH)
    with pytest.raises(TypeError, match="length"):
        module(prices, 0, 3.5 * DAY)
    with pytest.raises(ValueError, match="length"):
        module(prices, 0, DAY)  # too short for daily_log_sharpe
    with pytest.raises(ValueError, match="prices"):
        module(torch.ones(5 * DAY), 0, LENGTH)
    with pytest.raises(TypeError, match="prices"):
        module("prices.csv", 0, LENGTH)
    with pytest.raises(ValueError, match="mode"):
        module.simulate(prices, 0, LENGTH, mode="fast")
    with pytest.raises(ValueError, match="columns"):
        module(tfmm.synthetic_prices(n_assets=3, n_minutes=5 * DAY, seed=0), 0, LENGTH)
    with pytest.raises(TypeError, match="float64"):
        module.half()(prices, 0, LENGTH)


# ----------------------------------------------------------------------------------------------------------
# torch.compile of a user's function that calls a PoolModule.
#
# Today (torch 2.13) two things outside tfmm.torch decide what holds:
# (1) dynamo traces numpy calls on constants through torch._numpy, whose cbrt returns NaN for a negative
#     argument (np.cbrt(-8.0) -> nan under torch.compile). tfmm.specs.lambda_cap (Cardano's formula, called by
#     tfmm.core.strategies.common.lambdas while tracing) hits it: every EWMA decay becomes NaN, so with the
#     default dynamo config the compiled objective is silently wrong and its gradients NaN. Setting
#     torch._dynamo.config.trace_numpy = False runs those numpy calls as Python (graph breaks), and the
#     result equals eager;
# (2) tfmm.functional's start check calls np.asarray on the start tensor, a graph break, so fullgraph=True
#     fails even with (1) avoided.
# With both fixed in the core (emulated below), fullgraph=True compiles with no graph break and equals eager.

COMPILE_CHUNK = 720  # 12-hour chunks: few unrolled scan steps, so each compile takes seconds, not minutes


@pytest.fixture(scope="module")
def compile_case():
    prices = tfmm.synthetic_prices(n_assets=2, n_minutes=5 * DAY, seed=3)
    pool = tfmm.Pool(fee=0.003, chunk_period=COMPILE_CHUNK)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=2, k_per_day=20,
                                              chunk_period=COMPILE_CHUNK)
    return prices, pool, strategy


def _user_loss(module, prices, starts):
    return -module(prices, starts, LENGTH) + 1e-3 * sum((p * p).sum() for p in module.params.values())


def _check_compiled_equals_eager(module, prices, compiled):
    for starts in (torch.tensor([0, 600]), torch.tensor([60, 1200])):  # new start values: no recompile needed
        module.zero_grad()
        eager = _user_loss(module, prices, starts)
        eager.backward()
        expected = _grads(module)
        module.zero_grad()
        t0 = time.perf_counter()
        value = compiled(module, prices, starts)
        value.backward()
        print(f"compiled call: {time.perf_counter() - t0:.2f} s")
        np.testing.assert_allclose(value.item(), eager.item(), rtol=1e-12)
        for k, g in _grads(module).items():
            np.testing.assert_allclose(g.numpy(), expected[k].numpy(), rtol=1e-10, atol=1e-13)


def _lambda_cap_in_python_floats(chunk_period, max_memory_days):
    """tfmm.specs.lambda_cap with math instead of numpy (the proposed core fix: dynamo folds math calls)."""
    from tfmm.core.memory import MINUTES_PER_DAY

    y = (float(max_memory_days) * MINUTES_PER_DAY / (2.0 * chunk_period)) ** 3 / 6.0
    p, q = 1.0 / y, -1.0 / y
    root = math.sqrt(q * q / 4.0 + p ** 3 / 27.0)
    u = math.cbrt(-q / 2.0 + root) + math.cbrt(-q / 2.0 - root)
    for _ in range(3):
        u -= (y * u ** 3 + u - 1.0) / (3.0 * y * u * u + 1.0)
    return 1.0 - u


def test_compile_with_trace_numpy_off_equals_eager(compile_case):
    """Works today: torch.compile (no fullgraph, aot_eager) with dynamo's numpy tracing off equals eager."""
    prices, pool, strategy = compile_case
    torch._dynamo.reset()
    module = PoolModule(strategy, pool, mode="exact")
    compiled = torch.compile(_user_loss, backend="aot_eager")
    with torch._dynamo.config.patch(trace_numpy=False):
        _check_compiled_equals_eager(module, prices, compiled)


def test_compile_fullgraph_with_core_fixes(compile_case, monkeypatch):
    """PoolModule's own path (type checks, scenario cache lookup by id) has no graph break: with the two core
    fixes emulated, a user's torch.compile(fullgraph=True) over it compiles and equals eager."""
    import tfmm.core.strategies.common as common
    import tfmm.functional as functional

    prices, pool, strategy = compile_case
    assert abs(_lambda_cap_in_python_floats(COMPILE_CHUNK, 365.0) - tfmm.specs.lambda_cap(COMPILE_CHUNK, 365.0)) < 1e-15
    monkeypatch.setattr(common, "lambda_cap", _lambda_cap_in_python_floats)
    concrete = functional._concrete_starts
    monkeypatch.setattr(functional, "_concrete_starts",
                        lambda start: None if torch.compiler.is_compiling() else concrete(start))
    torch._dynamo.reset()
    module = PoolModule(strategy, pool, mode="smooth").prepare(prices, LENGTH)  # cache filled before compiling
    compiled = torch.compile(_user_loss, backend="aot_eager", fullgraph=True)
    _check_compiled_equals_eager(module, prices, compiled)
    torch._dynamo.reset()


def test_compile_default_config_equals_eager(compile_case):
    """torch.compile with dynamo's default config equals eager (tfmm.specs.lambda_cap uses math, not numpy,
    which dynamo would trace through torch._numpy, whose cbrt of a negative number is NaN)."""
    prices, pool, strategy = compile_case
    torch._dynamo.reset()
    module = PoolModule(strategy, pool, mode="exact")
    _check_compiled_equals_eager(module, prices, torch.compile(_user_loss, backend="aot_eager"))


# ----------------------------------------------------------------------------------------------------------
# examples


@pytest.mark.parametrize("script, args", [
    ("torch_pipeline.py", ["--steps", "2", "--batch", "2", "--train-bouts", "2", "--test-bouts", "2"]),
    ("jax_custom_loss.py", ["--steps", "2", "--batch", "2", "--train-bouts", "2", "--test-bouts", "2"]),
])
def test_example_runs(script, args):
    if script.startswith("jax"):
        pytest.importorskip("jax")
        pytest.importorskip("optax")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "test metrics (exact mode" in result.stdout, result.stdout[-2000:]
    assert "hodl" in result.stdout
