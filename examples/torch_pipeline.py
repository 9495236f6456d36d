"""A TFMM pool as one differentiable layer of a PyTorch model, trained end to end.

A small MLP reads features of the last days' prices (log returns over 1, 3 and 7 days of each asset, at the
bout's first row) and outputs the momentum strategy's parameters for that bout; the pool layer
(:class:`tfmm.torch.PoolModule`, called functionally with the MLP's output as its parameters) turns them into
the smooth-mode daily log Sharpe ratio of the bout, and ``torch.optim.Adam`` (gradients clipped to norm 1)
trains the MLP on ``-objective`` over minibatches of a fixed set of training bouts. Data: the bundled BTC/ETH
minute prices (``tfmm.example_prices()``); the first 70% of the rows train, the bouts of the last 30% test.
The test prints exact-mode metrics of the MLP's strategies, of the fixed momentum strategy the MLP starts
from, and of HODL (six bouts: an illustration, not evidence of an edge).

Run (about half a minute with the defaults on 2 cores):

    python examples/torch_pipeline.py                 # --steps 40 --batch 4 --train-bouts 32
    python examples/torch_pipeline.py --steps 2 --batch 2 --train-bouts 2 --test-bouts 2  # smoke run
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

import tfmm
import tfmm.torch

DAY = 1440
HORIZONS_DAYS = (1, 3, 7)  # feature look-backs; the first usable bout start is 7 days in


def features(log_prices: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """(bouts, len(HORIZONS_DAYS) * n_assets): log returns up to the bout's first row, per horizon and asset."""
    return torch.cat([log_prices[starts] - log_prices[starts - h * DAY] for h in HORIZONS_DAYS], dim=-1)


class StrategyNet(nn.Module):
    """features -> momentum parameters per bout: the base strategy's values plus a bounded change."""

    def __init__(self, n_features: int, base: tfmm.Strategy, feature_scale: torch.Tensor, hidden: int = 16) -> None:
        super().__init__()
        self.names = list(base.params)  # ["log_k", "logit_lambda"]
        n = base.n_assets
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh(), nn.Linear(hidden, len(self.names) * n))
        nn.init.zeros_(self.net[-1].weight)  # an untrained net gives exactly the base strategy
        nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("feature_scale", feature_scale)
        self.register_buffer("base", torch.tensor(np.stack([base.params[k] for k in self.names])))
        # the largest change of each parameter: log_k +- 2 (k x4 or /4), logit_lambda +- 1.5
        self.register_buffer("reach", torch.tensor([2.0 if k == "log_k" else 1.5 for k in self.names],
                                                   dtype=torch.float64)[:, None])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x / self.feature_scale).reshape(x.shape[0], len(self.names), -1)
        values = self.base + self.reach * torch.tanh(out)  # (bouts, params, n_assets)
        return {k: values[:, i] for i, k in enumerate(self.names)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="Adam steps (default 40)")
    parser.add_argument("--batch", type=int, default=4, help="bouts per step, from the training bouts (default 4)")
    parser.add_argument("--train-bouts", type=int, default=32, help="training bouts, drawn once (default 32)")
    parser.add_argument("--bout-days", type=int, default=4, help="bout length in days (default 4)")
    parser.add_argument("--lr", type=float, default=0.03, help="Adam learning rate (default 0.03)")
    parser.add_argument("--test-bouts", type=int, default=None, help="test bouts (default: all that fit)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    prices = tfmm.example_prices()
    pool = tfmm.Pool(fee=0.003, chunk_period=60)
    base = tfmm.Strategy.from_memory_days("momentum", n_assets=prices.n_assets, memory_days=2, k_per_day=20, pool=pool)
    length = args.bout_days * DAY
    first = max(HORIZONS_DAYS) * DAY
    train_end = int(0.7 * prices.n_rows)
    train_prices = prices.slice(0, train_end)  # the training scenario sees the training rows only
    log_prices = torch.log(torch.tensor(np.array(prices.values)))

    # the pool layer; its own parameters are replaced by the MLP's output (torch.func.functional_call)
    layer = tfmm.torch.PoolModule(base, pool, objective="daily_log_sharpe", mode="smooth")
    layer.prepare(train_prices, length)

    def bout_objective(params: dict[str, torch.Tensor], start: torch.Tensor) -> torch.Tensor:
        named = {f"params.{k}": v for k, v in params.items()}
        return torch.func.functional_call(layer, named, (train_prices, start, length))

    objectives = torch.func.vmap(bout_objective)  # per-bout parameters and starts, paired

    train_starts_all = np.arange(first, train_end - length + 1)
    scale = features(log_prices, torch.as_tensor(rng.choice(train_starts_all, 256))).std(dim=0)
    model = StrategyNet(scale.numel(), base, scale).double()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    # the training set: bout starts drawn once from the training rows; each step takes a minibatch of them
    train_starts = rng.choice(train_starts_all, args.train_bouts, replace=False)

    def train_objective() -> float:
        with torch.no_grad():
            starts = torch.as_tensor(train_starts)
            return objectives(model(features(log_prices, starts)), starts).mean().item()

    before = train_objective()
    print(f"{prices.n_rows} rows of {', '.join(prices.assets)}; training on rows < {train_end}, bouts of "
          f"{args.bout_days} days, {args.steps} steps of {args.batch} bouts")
    t0 = time.perf_counter()
    for step in range(args.steps):
        starts = torch.as_tensor(rng.choice(train_starts, min(args.batch, len(train_starts)), replace=False))
        opt.zero_grad()
        values = objectives(model(features(log_prices, starts)), starts)
        loss = -values.mean()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # per-bout Sharpe gradients are heavy-tailed
        opt.step()
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:3d}  minibatch objective {values.mean().item():8.3f}  "
                  f"({time.perf_counter() - t0:.1f} s)")

    print(f"objective on the {len(train_starts)} training bouts (smooth mode): {before:.3f} before, "
          f"{train_objective():.3f} after")

    # exact-mode test: each bout's strategy from the MLP, the fixed base strategy, HODL; full price history
    test_starts = np.arange(max(train_end, first), prices.n_rows - length + 1, length)
    if args.test_bouts is not None:
        test_starts = test_starts[: args.test_bouts]
    hodl = tfmm.Strategy("hodl", initial_weights=base.initial_weights)
    with torch.no_grad():
        per_bout = model(features(log_prices, torch.as_tensor(test_starts)))
    rows = {"mlp": [], "fixed momentum": [], "hodl": []}
    with tfmm.use("torch"):
        for i, start in enumerate(test_starts):
            strategy = base.with_params({k: v[i].numpy() for k, v in per_bout.items()})
            for name, s in (("mlp", strategy), ("fixed momentum", base), ("hodl", hodl)):
                sim = tfmm.simulate(prices, s, pool, start=int(start), length=length, mode="exact")
                rows[name].append(tfmm.metrics(sim))
    mean = {name: {m: float(np.mean([r[m] for r in rs])) for m in ("daily_log_sharpe", "returns_over_hodl",
                                                                  "returns")} for name, rs in rows.items()}
    print(f"test metrics (exact mode, {len(test_starts)} bouts of {args.bout_days} days, fee {pool.fee:.1%}): "
          + "; ".join(f"{name}: daily_log_sharpe {m['daily_log_sharpe']:.3f}, returns {m['returns']:+.3%}, "
                      f"over hodl {m['returns_over_hodl']:+.3%}" for name, m in mean.items()))


if __name__ == "__main__":
    main()
