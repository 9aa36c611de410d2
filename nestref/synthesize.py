"""NeST end to end: seed -> grow -> prune -> choose -> fine-tune -> compact.

``synthesize(config, out_dir)`` runs the schedule of docs/nest.md ("Schedule"):

    seed       the target architecture, hidden widths x ``width_scale``, a random
               ``density`` of connections active; trained for ``initial_epochs``
    growth     rounds of (connection growth in every layer, neuron growth in the
               hidden dense layers, feature-map growth in the conv layers, training)
               until validation error has not improved for ``patience`` rounds
    settle     training to convergence (cosine schedule) before pruning starts **[ours]**
               (docs/nest.md#ours-settle)
    pruning    rounds of (magnitude pruning per layer, partial-area pruning of conv
               layers, dead-neuron removal, retraining) down to a floor **[ours]**
               (docs/nest.md#ours-prune-stopping)
    choice     the round that meets the target on *smoothed* validation error, or the
               best one under a parameter budget (``choose_round``) **[ours]**
               (docs/nest.md#ours-choice), then fine-tuning and compaction

``mode="prune-only"`` replaces seed and growth by the dense network (trained for
``initial_epochs`` + ``settle_epochs``, as the grown network is before pruning): the
baseline that NeST's grow-then-prune is compared against on the same budget.

All decisions use the validation split; the test set is evaluated once, at the end.
The run is a chain of *steps*; after each one, the network, optimizer, random state
and history are checkpointed atomically, so an interrupted run resumes from its last
step and reaches the same result as an uninterrupted one.
"""
import json
import time
from pathlib import Path

import numpy as np

from . import accounting, architectures, grow, prune
from .augment import random_affine
from .compact import compact, save_compact
from .config import SynthesisConfig
from .data import load_splits
from .layers import Conv2d, Dense
from .models import Network, build
from .optim import SGD, cosine
from .plots import save_run_figures
from .storage import load_arrays, save_arrays, save_json
from .train import evaluate, fit, load_checkpoint, prepare_inputs, save_checkpoint

CHECKPOINT = "checkpoint.npz"


# ----------------------------------------------------------------------- data
def load_data(config):
    """The config's data set split as ``nestref.data.load_splits`` does: {"train", "val", "test"}
    (x, y) pairs, "source", "dataset" (name, checksum, ...), "image_shape", "classes"."""
    return load_splits(config.data_dir, config.n_val, config.seed, config.train_limit)


# ------------------------------------------------------------------ snapshots
def hidden_layers(net):
    """Positions of the masked layers that can change width (every one but the last)."""
    return [i for i, _ in net.masked_layers()][:-1]


def survivors(net):
    """How many hidden units are alive, by provenance: {"seed": n, "grown": n, "per_layer": [...]}."""
    per_layer = [{"layer": i, "seed": int((~net.layers[i].grown).sum()), "grown": int(net.layers[i].grown.sum())}
                 for i in hidden_layers(net)]
    return {"seed": sum(p["seed"] for p in per_layer), "grown": sum(p["grown"] for p in per_layer),
            "per_layer": per_layer}


def snapshot(net):
    """The numbers every history record carries about the network."""
    table = accounting.layer_table(net)
    return {"params": accounting.count_params(net), "flops": accounting.count_flops(net),
            "widths": net.widths(), "densities": [row["density"] for row in table],
            "alive": survivors(net)}


def choose_round(rounds, smoothing, param_budget=None, target_error=None):
    """Pick the pruning round to keep, from records with "params" and "val_error".

    Validation error is noisy (~0.2 points on 5k images), so each round is judged by
    the mean over a centred window of ``smoothing`` rounds **[ours]**
    (docs/nest.md#ours-choice). With a
    ``param_budget``: the lowest smoothed error among rounds within budget. Else the
    smallest round whose smoothed error is at most ``target_error``. Returns the
    index into ``rounds`` and the smoothed errors.
    """
    errors = np.array([r["val_error"] for r in rounds], dtype=float)
    half = smoothing // 2
    smoothed = np.array([errors[max(0, i - half):i + half + 1].mean() for i in range(len(errors))])
    params = np.array([r["params"] for r in rounds])
    if param_budget is not None:
        ok = np.flatnonzero(params <= param_budget)
        if ok.size == 0:
            ok = np.array([int(np.argmin(params))])  # nothing within budget: the smallest there is
        return int(ok[np.argmin(smoothed[ok])]), smoothed.tolist()
    ok = np.flatnonzero(smoothed <= target_error)
    if ok.size == 0:
        return int(np.argmin(smoothed)), smoothed.tolist()
    return int(ok[np.argmin(params[ok])]), smoothed.tolist()


# ---------------------------------------------------------------------- steps
class Run:
    """The state of one synthesis: network, optimizer, random generator, history.

    Each ``step_*`` method does one round and appends one record to ``history``;
    ``state`` holds what decides the next step, and all of it is checkpointed.
    """

    def __init__(self, config, data, out_dir, on_round=None, on_batch=None):
        self.config, self.data, self.out = config, data, Path(out_dir)
        self.on_round, self.on_batch = on_round, on_batch
        self.rng = np.random.default_rng(config.seed)
        self.history = []
        self.state = {"phase": "seed", "round": 0, "best_val": None, "stale": 0, "grown_val": None,
                      "prune_rounds": [], "chosen": None, "elapsed": 0.0,
                      "data_checksum": (data.get("dataset") or {}).get("checksum")}
        self.net = self.optimizer = None
        # the data's image shape and class count shape the network (input, output width)
        self.data_shape = {"image_shape": data.get("image_shape"), "classes": data.get("classes")}
        self.target_widths = build(config.arch, **self.data_shape).widths()

    # -------------------------------------------------------------- helpers
    def xy(self, split):
        x, y = self.data[split]
        return prepare_inputs(x, self.net), y

    def train(self, epochs, lr, schedule=None):
        self.optimizer.lr = lr
        records = fit(self.net, self.optimizer, self.xy("train"), None, epochs, schedule,
                      self.config.batch_size, self.rng, on_batch=self.on_batch,
                      augment=random_affine if self.config.augment else None)
        return records[-1]["train_loss"] if records else None

    def growth_batch(self):
        """A random batch of the training split: the data neuron and map growth decide on."""
        x, y = self.data["train"]
        idx = self.rng.choice(len(x), size=min(self.config.growth_batch_size, len(x)), replace=False)
        return prepare_inputs(x[idx], self.net), y[idx]

    def record(self, phase, t0, **extra):
        val = evaluate(self.net, *self.xy("val"))
        rec = {"phase": phase, "round": self.state["round"], **snapshot(self.net),
               "val_error": val["error"], "val_loss": val["loss"], "seconds": time.perf_counter() - t0, **extra}
        self.history.append(rec)
        if self.on_round is not None:
            self.on_round(rec)
        return rec

    # ---------------------------------------------------------------- steps
    def step_seed(self):
        config, t0 = self.config, time.perf_counter()
        if config.mode == "prune-only":
            self.net = build(config.arch, seed=config.seed, **self.data_shape)
        else:
            self.net = build(config.arch, width_scale=config.width_scale, density=config.density,
                             seed=config.seed, **self.data_shape)
        self.optimizer = SGD(self.net, lr=config.lr, momentum=config.momentum,
                             weight_decay=config.weight_decay)
        loss = self.train(config.initial_epochs, config.lr)
        rec = self.record("dense" if config.mode == "prune-only" else "seed", t0, train_loss=loss)
        self.state.update(best_val=rec["val_error"], grown_val=rec["val_error"],
                          phase="settle" if config.mode == "prune-only" or config.max_growth_rounds == 0
                          else "grow")

    def step_grow(self):
        """One growth round: connections everywhere, then neurons / feature maps, then training."""
        config, t0, net = self.config, time.perf_counter(), self.net
        self.state["round"] += 1
        gradients = grow.growth_gradients(net, *self.xy("train"), batch_size=config.growth_batch_size,
                                          n_batches=config.growth_batches)
        connection_reports = grow.grow_network_connections(net, config.growth_ratio, gradients,
                                                           init=config.growth_init, lr=config.lr)
        x, y = self.growth_batch()
        ladder = grow.birth_strength_ladder(config.birth_strength_max, config.birth_strength_min)
        # every bridging gradient on the pre-growth network: a neuron new in an
        # adjacent layer this round gets no pairs (docs/nest.md#ours-neuron-chunks)
        dense_hidden = [i for i in hidden_layers(net) if isinstance(net.layers[i], Dense)]
        bridging = {i: grow.network_bridging_gradient(net, i, x, y) for i in dense_hidden}
        unit_reports = []
        for (i, layer), target in zip(net.masked_layers(), self.target_widths):
            if i not in hidden_layers(net):
                continue
            count = min(max(1, round(config.neuron_fraction * target)), target - layer.n_out)
            if count < 1:
                unit_reports.append({"layer": i, "added": 0, "reason": f"at the width cap {target}"})
            elif isinstance(layer, Conv2d):
                unit_reports.append(grow.grow_feature_maps(
                    net, i, count, x, y, config.feature_map_candidates, self.optimizer, self.rng).as_dict())
            else:
                unit_reports.append(grow.grow_neurons(
                    net, i, count, x, y, config.birth_ratio, ladder, config.birth_sign, self.optimizer,
                    self.rng, bridging=bridging[i]).as_dict())
        after_growth = snapshot(net)
        loss = self.train(config.growth_epochs, config.lr)
        rec = self.record("grow", t0, train_loss=loss, params_after_growth=after_growth["params"],
                          connections=[r.as_dict() for r in connection_reports], units=unit_reports)
        if rec["val_error"] < self.state["best_val"]:
            self.state.update(best_val=rec["val_error"], stale=0)
        else:
            self.state["stale"] += 1
        self.state["grown_val"] = rec["val_error"]
        rounds_done = self.state["round"] >= config.max_growth_rounds
        if self.state["stale"] >= config.patience or rounds_done:
            self.state.update(phase="settle", round=0)

    def step_settle(self):
        """Train the grown (or dense) network to convergence before pruning: a cosine schedule
        **[ours]** (docs/nest.md#ours-settle)."""
        config, t0 = self.config, time.perf_counter()
        loss = self.train(config.settle_epochs, config.lr, cosine(config.lr, 0.01))
        rec = self.record("settle", t0, train_loss=loss)
        self.state.update(phase="prune", round=0, grown_val=rec["val_error"])

    def prune_fractions(self):
        config = self.config
        if config.prune_fractions:
            if len(config.prune_fractions) != len(self.net.masked_layers()):
                raise ValueError(f"prune_fractions has {len(config.prune_fractions)} entries; "
                                 f"{config.arch} has {len(self.net.masked_layers())} masked layers")
            return list(config.prune_fractions)
        return list(architectures.get(config.arch).prune_fractions)

    def step_prune(self):
        """One pruning round: magnitude, partial area, dead units, retraining; keep a snapshot."""
        config, t0, net = self.config, time.perf_counter(), self.net
        self.state["round"] += 1
        reports = [r.as_dict() for r in prune.prune_network(net, self.prune_fractions())]
        area_reports = []
        if config.area_fraction > 0:
            x, _ = self.growth_batch()
            for i, layer in net.masked_layers():
                if isinstance(layer, Conv2d):
                    x_i = net.forward_until(i, x[:256], batch_size=1000)
                    report = prune.prune_partial_area(net, i, config.area_fraction, x_i)
                    area_reports.append(report.as_dict())
        removal = prune.remove_dead_neurons(net, self.optimizer).as_dict()
        loss = self.train(config.prune_epochs, config.prune_lr)
        rec = self.record("prune", t0, train_loss=loss, pruning=reports, partial_area=area_reports, removal=removal)
        path = self.out / "rounds" / f"prune-{self.state['round']:03d}.npz"
        save_arrays(path, net.to_arrays())
        self.state["prune_rounds"].append({"round": self.state["round"], "params": rec["params"],
                                           "val_error": rec["val_error"], "path": str(path.relative_to(self.out))})
        floor_reached = rec["params"] <= config.prune_floor_params
        too_wrong = rec["val_error"] > self.state["grown_val"] + config.max_error_increase
        if floor_reached or too_wrong or self.state["round"] >= config.max_prune_rounds:
            self.state["phase"] = "finetune"
            self.state["stop_reason"] = ("params floor reached" if floor_reached else
                                         "validation error ceiling exceeded" if too_wrong else "max_prune_rounds")

    def step_finetune(self):
        """Choose the round (smoothed validation error), fine-tune it with a cosine schedule."""
        config, t0 = self.config, time.perf_counter()
        rounds = self.state["prune_rounds"]
        if rounds:
            target = self.state["grown_val"] + config.tolerance
            index, smoothed = choose_round(rounds, config.smoothing, config.param_budget, target)
            chosen = rounds[index]
            self.net = Network.from_arrays(load_arrays(self.out / chosen["path"]))
            self.state["chosen"] = {**chosen, "smoothed_val_error": smoothed[index], "target_val_error": target,
                                    "param_budget": config.param_budget}
        self.optimizer = SGD(self.net, lr=config.prune_lr, momentum=config.momentum,
                             weight_decay=config.weight_decay)
        self.state["round"] = 0
        loss = self.train(config.finetune_epochs, config.prune_lr, cosine(config.prune_lr, 0.01))
        self.record("finetune", t0, train_loss=loss, chosen=self.state["chosen"])
        self.state["phase"] = "done"

    # ---------------------------------------------------------- checkpoints
    def save(self):
        self.state["elapsed"] += time.perf_counter() - self._t_resume
        self._t_resume = time.perf_counter()
        save_checkpoint(self.out / CHECKPOINT, self.net, self.optimizer,
                        {"run": self.state, "history": self.history, "rng": self.rng.bit_generator.state,
                         "config": self.config.to_dict()})

    def restore(self):
        net, optimizer, saved = load_checkpoint(self.out / CHECKPOINT)
        # where the data lives is not part of what the run is; which data it is, is
        data_sums = (saved["run"].get("data_checksum"), self.state.get("data_checksum"))
        if None not in data_sums and data_sums[0] != data_sums[1]:
            raise ValueError(f"{self.out / CHECKPOINT} was written on another data set (sha256 "
                             f"{data_sums[0]}, this run reads {data_sums[1]}); resume with the same "
                             f"data or choose another --out")
        ours = {k: v for k, v in self.config.to_dict().items() if k != "data_dir"}
        theirs = {k: v for k, v in saved["config"].items() if k != "data_dir"}
        if ours != theirs:
            changed = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
            raise ValueError(f"{self.out / CHECKPOINT} was written with a different config (differs in {changed}); "
                             f"resume with the same config or choose another --out")
        self.net, self.optimizer = net, optimizer
        self.state, self.history = saved["run"], saved["history"]
        self.rng.bit_generator.state = saved["rng"]

    def run(self, resume=False):
        self._t_resume = time.perf_counter()
        if resume and (self.out / CHECKPOINT).exists():
            self.restore()
        steps = {"seed": self.step_seed, "grow": self.step_grow, "settle": self.step_settle, "prune": self.step_prune,
                 "finetune": self.step_finetune}
        while self.state["phase"] != "done":
            steps[self.state["phase"]]()
            self.save()
        return self.finish()

    def finish(self):
        """Compact the result, evaluate it once on the test set, write model, history, report."""
        config = self.config
        masked_test = evaluate(self.net, *self.xy("test"))
        small = compact(self.net)
        x_test, y_test = self.xy("test")
        compact_error = float((small.predict(x_test).argmax(axis=1) != y_test).mean())
        save_compact(self.out / "model.npz", small)
        params, flops = accounting.count_params(self.net), accounting.count_flops(self.net)
        baseline = accounting.dense_baseline(config.arch, **self.data_shape)
        report = {
            "arch": config.arch, "mode": config.mode, "seed": config.seed,
            "augment": config.augment,
            "test_error": masked_test["error"], "compact_test_error": compact_error,
            "val_error": self.history[-1]["val_error"], "params": params, "flops": flops,
            "params_compression": baseline["params"] / params, "flops_compression": baseline["flops"] / flops,
            "dense_baseline": baseline, "widths": self.net.widths(), "alive": survivors(self.net),
            "layers": accounting.layer_table(self.net), "chosen": self.state["chosen"],
            "stop_reason": self.state.get("stop_reason"),
            "max_params_during_growth": max(r.get("params_after_growth", r["params"]) for r in self.history),
            "wall_seconds": self.state["elapsed"], "data_source": self.data["source"],
            "data": self.data.get("dataset"),
            "n_train": len(self.data["train"][0]), "n_val": len(self.data["val"][0]),
            "config": config.to_dict(),
        }
        save_json(self.out / "history.json", self.history)
        save_json(self.out / "report.json", report)
        save_run_figures(self.history, self.net.masked_layers()[0][1].mask, self.out / "figures",
                         self.data_shape["image_shape"] or (28, 28))
        return report


def load_run(out_dir):
    """A finished run's (report dict, history list, final masked network) from its directory."""
    out = Path(out_dir)
    for name in ("report.json", "history.json", CHECKPOINT):
        if not (out / name).exists():
            raise FileNotFoundError(f"{out / name} not found: is {out} a finished nestref synthesize run?")
    net, _, _ = load_checkpoint(out / CHECKPOINT)
    return json.loads((out / "report.json").read_text()), json.loads((out / "history.json").read_text()), net


def synthesize(config, out_dir, resume=False, on_round=None, on_batch=None, data=None):
    """Run NeST (or the prune-only baseline) as ``config`` says; returns report.json's dict.

    out_dir receives checkpoint.npz (after every step), rounds/prune-NNN.npz, model.npz
    (the compact network), history.json and report.json. on_round(record) is called
    after every round; on_batch(b, n, loss) after every training batch.
    """
    if not isinstance(config, SynthesisConfig):
        raise TypeError(f"config must be a SynthesisConfig, got {type(config).__name__}")
    data = data if data is not None else load_data(config)
    return Run(config, data, out_dir, on_round, on_batch).run(resume)
