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
               layers, dead-neuron removal, retraining) down to a floor, or until the
               smoothed validation error passes a ceiling **[ours]**
               (docs/nest.md#ours-prune-stopping)
    choice     every selection from the one trajectory: "target" (the smallest round
               that meets the target on *smoothed* validation error) and one
               "budget-<N>" per param budget (the best smoothed error within N params)
               **[ours]** (``choose_round``, docs/nest.md#ours-choice); each chosen
               round is fine-tuned once, and tested once at the end

``mode="prune-only"`` replaces seed and growth by the dense network, trained for
``dense_epochs`` (the study sets it to the epochs the NeST run used before pruning:
docs/nest.md#ours-equal-budget), then pruned by the same rules: the baseline that
NeST's grow-then-prune is compared against on the same budget. ``mode="dense"`` stops
after the dense network's training: the dense baseline, trained and augmented the same way.

All decisions use the validation split; the test set is evaluated once, at the end.
The run is a chain of *steps*; after each one, the network, optimizer, random state
and history are checkpointed atomically (the checkpoint before it kept as
``checkpoint.prev.npz``), so an interrupted run resumes from its last step and reaches
the same result as an uninterrupted one.

The output directory is checked before any training (``nestref.run.run_files.check_run_dir``):
it must be writable, and a directory holding files nestref did not write, or a run's
checkpoint, is refused unless the caller resumes (``resume=True``) or replaces nestref's own
files (``overwrite=True``, which removes them only once the data has loaded).
"""
import json
import time
import warnings
from pathlib import Path

import numpy as np

from ..checks import is_count, is_int, is_number
from ..core.augment import random_affine
from ..core.layers import Conv2d, Dense
from ..core.optim import SGD, cosine
from ..core.reproducible import numerics_record, one_blas_thread
from ..core.train import evaluate, fit, prepare_inputs
from ..data.datasets import GIVEN_DATA, load_splits
from ..data.storage import check_writable_dir, hold_lock, save_arrays, save_json
from ..errors import (
    CheckpointError,
    ConfigError,
    InvalidArgumentError,
    ReportError,
    TrainingDiverged,
)
from ..nest import accounting, architectures, grow, prune
from ..nest.config import MODES, RESUME_SAFE_FIELDS, SynthesisConfig, resume_conflicts
from ..nest.networks import build
from .checkpoint import load_checkpoint, load_network, resume_checkpoint, save_checkpoint
from .compact import compact, save_compact
from .plots import save_run_figures
from .run_files import (
    CHECKPOINT,
    LOCK,
    check_run_dir,
    clear_run_files,
    mark_run_directory,
    remove_interrupted_writes,
)


# ----------------------------------------------------------------------- data
def load_data(config):
    """The config's data set split as ``nestref.data.datasets.load_splits`` does: {"train", "val",
    "test"} (x, y) pairs, "source", "dataset" (name, checksum, ...), "image_shape", "classes"."""
    return load_splits(config.data_dir, config.n_val, config.seed, config.train_limit)


# ------------------------------------------------------------------ snapshots
def hidden_layers(net):
    """Positions of the masked layers that can change width (every one but the last)."""
    return [i for i, _ in net.masked_layers()][:-1]


def survivors(net):
    """How many hidden units are alive, by provenance **[ours]** (docs/nest.md#ours-provenance):
    {"seed": n, "grown": n, "per_layer": [...]}."""
    per_layer = [
        {
            "layer": i,
            "seed": int((~net.layers[i].grown).sum()),
            "grown": int(net.layers[i].grown.sum()),
        }
        for i in hidden_layers(net)
    ]
    return {"seed": sum(p["seed"] for p in per_layer), "grown": sum(p["grown"] for p in per_layer),
            "per_layer": per_layer}


def snapshot(net):
    """The numbers every history record carries about the network."""
    table = accounting.layer_table(net)
    return {"params": accounting.count_params(net), "flops": accounting.count_flops(net),
            "widths": net.widths(), "densities": [row["density"] for row in table],
            "alive": survivors(net)}


def smooth(errors, smoothing):
    """Each value averaged over a window of exactly ``smoothing`` consecutive values, centred
    on it (an even window reaches one further ahead than back: 2 -> [i, i + 1], 4 -> [i - 1,
    i + 2]); at the ends of the sequence the window is cut to the values there are."""
    errors = np.asarray(errors, dtype=float)
    back = (smoothing - 1) // 2
    return np.array(
        [errors[max(0, i - back) : i - back + smoothing].mean() for i in range(len(errors))]
    )


def stop_ceiling(settled_error, max_increase, max_relative_increase):
    r"""The validation error at which pruning stops **[ours]** (docs/nest.md#ours-prune-stopping):
    :math:`e_s + \max(\Delta, r\,e_s)`, with e_s the settled network's error, so that a data
    set whose dense error is ~12% gets room in proportion, not MNIST's one point."""
    return settled_error + max(max_increase, max_relative_increase * settled_error)


def choose_round(rounds, smoothing, param_budget=None, target_error=None):
    """Pick the pruning round to keep, from records with "params" and "val_error".

    Validation error is noisy (~0.2 points on 5k images), so each round is judged by
    the mean over a centred window of ``smoothing`` rounds (``smooth``) **[ours]**
    (docs/nest.md#ours-choice). With a ``param_budget``: the lowest smoothed error among
    rounds within budget **[ours]** (if none is, the smallest round). Else the smallest
    round whose smoothed error is at most ``target_error`` (else the lowest smoothed
    error). Returns the index into ``rounds`` and the smoothed errors.
    """
    smoothed = smooth([r["val_error"] for r in rounds], smoothing)
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


def over_budget_warnings(selections):
    """A warning for each budget selection larger than its budget: no pruning round was within
    it, so ``choose_round`` took the smallest network there is. selections: report.json's."""
    return [f"selection {name}: pruning stopped at {entry['params']:,} params, above the budget "
            f"of {entry['param_budget']:,} (prune_floor_params, max_prune_rounds or "
            f"max_error_increase ended it first); the selection is the run's smallest network"
            for name, entry in selections.items()
            if entry["param_budget"] is not None and entry["params"] > entry["param_budget"]]


# ---------------------------------------------------------------------- steps
class Run:
    """The state of one synthesis: network, optimizer, random generator, history.

    Each ``step_*`` method does one round and appends one record to ``history``;
    ``state`` holds what decides the next step, and all of it is checkpointed.
    """

    def __init__(self, config, data, out_dir, on_round=None, on_batch=None, on_warning=None):
        self.config, self.data, self.out = config, data, Path(out_dir)
        self.on_round, self.on_batch = on_round, on_batch
        self.on_warning = on_warning or (lambda message: warnings.warn(message, stacklevel=3))
        self.warnings = []
        self.rng = np.random.default_rng(config.seed)
        self.history = []
        self.state = {
            "phase": "seed",
            "round": 0,
            "best_val": None,
            "stale": 0,
            "grown_val": None,
            "prune_rounds": [],
            "chosen": None,
            "elapsed": 0.0,
            "epochs": 0,
            "epochs_before_pruning": None,
            "growth_stop_reason": None,
            "data_checksum": None,
            "step_epochs": 0,
        }
        self.net = self.optimizer = self.data = None
        if data is not None:
            self.use_data(data)

    def use_data(self, data):
        """Attach the data set (after ``restore``, when resuming): its image shape and class
        count shape the network (input, output width), and a resumed run must read the
        data set it was started on (where it lives may change)."""
        checksum = (data.get("dataset") or {}).get("checksum")
        started_on = self.state.get("data_checksum")
        if None not in (started_on, checksum) and started_on != checksum:
            raise ConfigError(f"{self.out / CHECKPOINT} was written on another data set (sha256 "
                              f"{started_on}, this run reads {checksum}); resume with the same "
                              f"data or choose another --out")
        self.data, self.state["data_checksum"] = data, checksum
        self.data_shape = {"image_shape": data.get("image_shape"), "classes": data.get("classes")}
        self.target_widths = build(self.config.arch, **self.data_shape).widths()

    # -------------------------------------------------------------- helpers
    def xy(self, split):
        x, y = self.data[split]
        return prepare_inputs(x, self.net), y

    def train(self, epochs, lr, schedule=None, resumable=False):
        """Train ``epochs`` epochs; the last epoch's training loss.

        resumable: checkpoint after every epoch but the last, so that an interrupted step
        continues from its last finished epoch (``state["step_epochs"]``), not from its start.
        Only for a step that does nothing but train once its network exists (seed, settle).
        """
        start = self.state.get("step_epochs", 0) if resumable else 0
        if start == 0:
            self.state["epochs"] = self.state.get("epochs", 0) + epochs
        self.optimizer.lr = lr

        def checkpoint(record):
            if record["epoch"] < epochs:
                self.state["step_epochs"] = record["epoch"]
                self.save()

        records = fit(self.net, self.optimizer, self.xy("train"), None, epochs, schedule,
                      self.config.batch_size, self.rng, start_epoch=start,
                      on_epoch=checkpoint if resumable else None, on_batch=self.on_batch,
                      augment=random_affine if self.config.augment else None)
        self.state["step_epochs"] = 0
        return records[-1]["train_loss"] if records else None

    def growth_batch(self):
        """A random batch of the training split: the data neuron and map growth decide on."""
        x, y = self.data["train"]
        idx = self.rng.choice(
            len(x), size=min(self.config.growth_batch_size, len(x)), replace=False
        )
        return prepare_inputs(x[idx], self.net), y[idx]

    def record(self, phase, t0, **extra):
        val = evaluate(self.net, *self.xy("val"))
        rec = {
            "phase": phase,
            "round": self.state["round"],
            "epochs": self.state.get("epochs"),
            **snapshot(self.net),
            "val_error": val["error"],
            "val_loss": val["loss"],
            "seconds": time.perf_counter() - t0,
            **extra,
        }
        self.history.append(rec)
        if self.on_round is not None:
            self.on_round(rec)
        return rec

    # ---------------------------------------------------------------- steps
    def step_seed(self):
        """The seed (NeST) or the dense network (prune-only, dense), trained at ``lr``; the dense
        one for ``dense_epochs`` - ``settle_epochs`` (docs/nest.md#ours-equal-budget)."""
        config, t0 = self.config, time.perf_counter()
        dense = config.mode != "nest"
        if self.state.get("step_epochs", 0) == 0:  # else resumed between epochs: net restored
            if dense:
                self.net = build(config.arch, seed=config.seed, **self.data_shape)
            else:
                self.net = build(config.arch, width_scale=config.width_scale,
                                 density=config.density, seed=config.seed, **self.data_shape)
            self.optimizer = SGD(self.net, lr=config.lr, momentum=config.momentum,
                                 weight_decay=config.weight_decay)
        epochs = (
            config.dense_epochs - config.settle_epochs
            if dense and config.dense_epochs is not None
            else config.initial_epochs
        )
        loss = self.train(epochs, config.lr, resumable=True)
        rec = self.record("dense" if dense else "seed", t0, train_loss=loss)
        self.state.update(best_val=rec["val_error"], grown_val=rec["val_error"],
                          phase="settle" if dense or config.max_growth_rounds == 0 else "grow")
        if not dense and config.max_growth_rounds == 0:
            self.state["growth_stop_reason"] = "max_growth_rounds is 0: no growth"

    def step_grow(self):
        """One growth round: connections everywhere, then neurons / feature maps, then training."""
        config, t0, net = self.config, time.perf_counter(), self.net
        self.state["round"] += 1
        scales = self.neuron_weight_scales()
        gradients = grow.growth_gradients(
            net,
            *self.xy("train"),
            batch_size=config.growth_batch_size,
            n_batches=config.growth_batches,
        )
        connection_reports = grow.grow_network_connections(net, config.growth_ratio, gradients,
                                                           init=config.growth_init, lr=config.lr)
        unit_reports = self.grow_units(scales)
        after_growth = snapshot(net)
        loss = self.train(config.growth_epochs, config.lr)
        rec = self.record("grow", t0, train_loss=loss, params_after_growth=after_growth["params"],
                          connections=[r.as_dict() for r in connection_reports], units=unit_reports)
        self.update_growth_stop(rec["val_error"])

    def neuron_weight_scales(self):
        """{hidden layer: (mean |w| in, mean |w| out)} of the layers with weights both sides."""
        net = self.net
        # new neurons take their layers' weight scale as it is before this round's
        # connection growth, whose new weights are near zero (docs/nest.md#ours-neuron-scale)
        following = [k for k, _ in net.masked_layers()][1:]
        return {i: (grow.mean_active_magnitude(net.layers[i].weight, net.layers[i].mask),
                    grow.mean_active_magnitude(net.layers[j].weight, net.layers[j].mask))
                for i, j in zip(hidden_layers(net), following, strict=True)
                if (net.layers[i].mask != 0).any() and (net.layers[j].mask != 0).any()}

    def grow_units(self, scales):
        """Grow neurons / feature maps in every hidden layer below its width cap; their reports.

        Every bridging gradient is taken on the network before this round adds any neuron
        **[ours]** (docs/nest.md#ours-neuron-chunks).
        """
        config, net = self.config, self.net
        x, y = self.growth_batch()
        ladder = grow.birth_strength_ladder(config.birth_strength_max, config.birth_strength_min)
        # every bridging gradient on the pre-growth network: a neuron new in an
        # adjacent layer this round gets no pairs (docs/nest.md#ours-neuron-chunks)
        dense_hidden = [i for i in hidden_layers(net) if isinstance(net.layers[i], Dense)]
        bridging = {i: grow.network_bridging_gradient(net, i, x, y) for i in dense_hidden}
        unit_reports = []
        for (i, layer), target in zip(net.masked_layers(), self.target_widths, strict=True):
            if i not in hidden_layers(net):
                continue
            count = grow.neurons_to_add(config.neuron_fraction, target, layer.n_out)
            if count < 1:
                unit_reports.append(
                    {"layer": i, "added": 0, "reason": f"at the width cap {target}"}
                )
            elif isinstance(layer, Conv2d):
                unit_reports.append(
                    grow.grow_feature_maps(
                        net, i, count, x, y, config.feature_map_candidates, self.optimizer, self.rng
                    ).as_dict()
                )
            else:
                unit_reports.append(
                    grow.grow_neurons(
                        net,
                        i,
                        count,
                        x,
                        y,
                        config.birth_ratio,
                        ladder,
                        config.birth_sign,
                        self.optimizer,
                        self.rng,
                        bridging=bridging[i],
                        weight_scales=scales.get(i),
                    ).as_dict()
                )
        return unit_reports

    def update_growth_stop(self, val_error):
        """Patience bookkeeping after a growth round; ends growth on patience or the round cap."""
        config = self.config
        if val_error < self.state["best_val"]:
            self.state.update(best_val=val_error, stale=0)
        else:
            self.state["stale"] += 1
        self.state["grown_val"] = val_error
        rounds_done = self.state["round"] >= config.max_growth_rounds
        if self.state["stale"] >= config.patience or rounds_done:
            self.state["growth_stop_reason"] = (
                f"patience: no lower validation error for {config.patience} round(s)"
                if self.state["stale"] >= config.patience else
                f"max_growth_rounds ({config.max_growth_rounds}) reached, validation error still "
                f"improving within patience {config.patience}")
            self.state.update(phase="settle", round=0)

    def step_settle(self):
        """Train the grown (or dense) network to convergence before pruning: a cosine schedule
        **[ours]** (docs/nest.md#ours-settle)."""
        config, t0 = self.config, time.perf_counter()
        loss = self.train(config.settle_epochs, config.lr, cosine(config.lr, 0.01), resumable=True)
        rec = self.record("settle", t0, train_loss=loss)
        self.state.update(
            phase="done" if config.mode == "dense" else "prune",
            round=0,
            grown_val=rec["val_error"],
            epochs_before_pruning=self.state["epochs"],
        )

    def prune_fractions(self):
        config = self.config
        if config.prune_fractions:
            if len(config.prune_fractions) != len(self.net.masked_layers()):
                raise ConfigError(f"prune_fractions has {len(config.prune_fractions)} entries; "
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
                    report = prune.prune_partial_area(net, i, config.area_fraction, x_i,
                                                      rank=config.area_rank)
                    area_reports.append(report.as_dict())
        removal = prune.remove_dead_neurons(net, self.optimizer).as_dict()
        loss = self.train(config.prune_epochs, config.prune_lr)
        rec = self.record(
            "prune",
            t0,
            train_loss=loss,
            pruning=reports,
            partial_area=area_reports,
            removal=removal,
        )
        path = self.out / "rounds" / f"prune-{self.state['round']:03d}.npz"
        save_arrays(path, net.to_arrays())
        self.state["prune_rounds"].append(
            {
                "round": self.state["round"],
                "params": rec["params"],
                "val_error": rec["val_error"],
                "path": str(path.relative_to(self.out)),
            }
        )
        floor_reached = rec["params"] <= config.prune_floor_params
        # the ceiling judges the mean of the last `smoothing` rounds, not one reading
        # (docs/nest.md#ours-prune-stopping); the same rule and parameters for every mode
        recent = [r["val_error"] for r in self.state["prune_rounds"][-config.smoothing:]]
        ceiling = stop_ceiling(
            self.state["grown_val"], config.max_error_increase, config.max_relative_error_increase
        )
        rec.update(smoothed_val_error=float(np.mean(recent)), stop_ceiling=ceiling)
        too_wrong = len(recent) >= config.smoothing and rec["smoothed_val_error"] > ceiling
        if floor_reached or too_wrong or self.state["round"] >= config.max_prune_rounds:
            self.state["phase"] = "finetune"
            self.state["stop_reason"] = (
                "params floor reached"
                if floor_reached
                else "validation error ceiling exceeded"
                if too_wrong
                else "max_prune_rounds"
            )

    def choose_selections(self):
        """Every selection of the config from the one pruning trajectory, on validation only:
        {name: the chosen round's record + smoothed error, rule}."""
        config, rounds = self.config, self.state["prune_rounds"]
        target = self.state["grown_val"] + config.tolerance
        chosen = {}
        for name in config.selection_names():
            budget = int(name.split("-", 1)[1]) if name.startswith("budget-") else None
            index, smoothed = choose_round(
                rounds, config.smoothing, budget, None if budget else target
            )
            chosen[name] = {**rounds[index], "smoothed_val_error": float(smoothed[index]),
                            "target_val_error": None if budget else target, "param_budget": budget}
        return chosen

    def step_finetune(self):
        """Fine-tune one chosen round (cosine schedule); the rounds of every selection are
        chosen at the first call, each distinct round is fine-tuned once, the headline
        selection's last (so that the final network is the one report.json describes)."""
        config, t0 = self.config, time.perf_counter()
        if "selections" not in self.state:
            chosen = self.choose_selections()
            headline = chosen[config.headline_selection()]["round"]
            queue = sorted({c["round"] for c in chosen.values()} - {headline}) + [headline]
            self.state.update(selections=chosen, finetune_queue=queue, finetuned={})
        round_number = self.state["finetune_queue"][0]
        names = [n for n, c in self.state["selections"].items() if c["round"] == round_number]
        source = self.state["selections"][names[0]]
        self.net = load_network(self.out / source["path"])
        self.optimizer = SGD(self.net, lr=config.prune_lr, momentum=config.momentum,
                             weight_decay=config.weight_decay)
        self.state["round"] = 0
        loss = self.train(config.finetune_epochs, config.prune_lr, cosine(config.prune_lr, 0.01))
        path = self.out / "rounds" / f"finetuned-{round_number:03d}.npz"
        save_arrays(path, self.net.to_arrays())
        self.state["chosen"] = self.state["selections"][config.headline_selection()]
        rec = self.record("finetune", t0, train_loss=loss, chosen=source, selections=names)
        self.state["finetuned"][str(round_number)] = {"path": str(path.relative_to(self.out)),
                                                      "val_error": rec["val_error"]}
        self.state["finetune_queue"] = self.state["finetune_queue"][1:]
        if not self.state["finetune_queue"]:
            self.state["phase"] = "done"

    # ---------------------------------------------------------- checkpoints
    def save(self):
        self.state["elapsed"] += time.perf_counter() - self._t_resume
        self._t_resume = time.perf_counter()
        save_checkpoint(
            self.out / CHECKPOINT,
            self.net,
            self.optimizer,
            {
                "run": self.state,
                "history": self.history,
                "rng": self.rng.bit_generator.state,
                "config": self.config.to_dict(),
            },
        )

    def restore(self):
        path = self.out / CHECKPOINT
        net, optimizer, saved, warning = resume_checkpoint(path)
        for key, kind in (("run", dict), ("history", list), ("rng", dict), ("config", dict)):
            if not isinstance(saved.get(key), kind):
                raise CheckpointError(f"{path}: state field '{key}' must be a {kind.__name__}, "
                                      f"got {type(saved.get(key)).__name__}; not a synthesis "
                                      f"checkpoint")
        run = saved["run"]
        steps = ("seed", "grow", "settle", "prune", "finetune", "done")
        if (run.get("phase") not in steps or not is_int(run.get("round"))
                or not is_number(run.get("elapsed", 0.0))):
            raise CheckpointError(f"{path}: state field 'run' has no valid phase/round: "
                                  f"{run.get('phase')!r}, {run.get('round')!r}")
        if optimizer is None:
            raise CheckpointError(f"{path}: no optimizer state inside; not a synthesis checkpoint")
        conflicts = resume_conflicts(saved["config"], self.config, run["phase"], run["round"],
                                     mid_step=bool(run.get("step_epochs")))
        if conflicts:
            changes = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in conflicts)
            raise ConfigError(
                f"{path} was written with a different config (differs in "
                f"{[k for k, _, _ in conflicts]}: {changes}). "
                f"On resume only {', '.join(RESUME_SAFE_FIELDS[:3])} and the epochs of phases not "
                f"yet started may change; resume with the run's config, or start a new run in "
                f"another --out (or with --overwrite)")
        try:
            self.rng.bit_generator.state = saved["rng"]
        except (TypeError, ValueError, KeyError) as err:
            raise CheckpointError(
                f"{path}: state field 'rng' is not a random generator state ({err})"
            ) from err
        # the report's config is the latest; what changed on resume, and where, is kept beside it
        changed = {k: [saved["config"].get(k), v] for k, v in self.config.to_dict().items()
                   if k != "data_dir" and saved["config"].get(k) != v}
        if changed:
            run.setdefault("config_changes", []).append(
                {"phase": run["phase"], "round": run["round"], "changed": changed}
            )
        self.net, self.optimizer = net, optimizer
        self.state, self.history = run, saved["history"]
        if warning:
            self.warn(warning)

    def warn(self, message):
        self.warnings.append(message)
        self.on_warning(message)

    @one_blas_thread()  # one answer per seed, whatever the core count: nestref.core.reproducible
    def run(self, resume=False):
        """Run the remaining steps (from the checkpoint when ``resume``); returns report.json's
        dict."""
        self._t_resume = time.perf_counter()
        if resume:
            self.restore()
        steps = {
            "seed": self.step_seed,
            "grow": self.step_grow,
            "settle": self.step_settle,
            "prune": self.step_prune,
            "finetune": self.step_finetune,
        }
        while self.state["phase"] != "done":
            phase = self.state["phase"]
            try:
                steps[phase]()
            except TrainingDiverged as err:
                raise TrainingDiverged(self._divergence_advice(phase, err)) from err
            self.save()
        return self.finish()

    def _divergence_advice(self, phase, err):
        """What to do after a divergence: resume with a lower learning rate, which resume allows."""
        name = "prune_lr" if phase in ("prune", "finetune") else "lr"
        lower = getattr(self.config, name) / 2
        saved = (
            f"the run is saved up to its last finished step in {self.out / CHECKPOINT}"
            if (self.out / CHECKPOINT).exists()
            else "no step had finished, so nothing is saved"
        )
        return (f"training diverged in the {phase} phase ({err}); {saved}. Lower {name} (it is "
                f"{getattr(self.config, name):g}) and resume: rerun the command with "
                f"--resume --set {name}={lower:g} (or lower; learning rates may change on resume)")

    def selection_networks(self):
        """{selection name: (its final masked network, its validation error)}; all decisions
        are made by now (finish runs after the last step)."""
        if self.config.mode == "dense":
            return {"dense": (self.net, self.history[-1]["val_error"])}
        nets = {}
        for name, chosen in self.state["selections"].items():
            done = self.state["finetuned"][str(chosen["round"])]
            nets[name] = load_network(self.out / done["path"]), done["val_error"]
        return nets

    def test_selection(self, name, net, val_error):
        """Compact one selection's network, test it (once), save it; its report.json entry."""
        config = self.config
        masked_test = evaluate(net, *self.xy("test"))
        small = compact(net)
        x_test, y_test = prepare_inputs(self.data["test"][0], net), self.data["test"][1]
        compact_error = float((small.predict(x_test).argmax(axis=1) != y_test).mean())
        model = Path("selections") / name / "model.npz"
        save_compact(self.out / model, small)
        chosen = self.state["selections"][name] if config.mode != "dense" else None
        path_epochs = (self.state["epochs"] if chosen is None else
                       self.state["epochs_before_pruning"] + chosen["round"] * config.prune_epochs
                       + config.finetune_epochs)
        return {
            "round": None if chosen is None else chosen["round"],
            "rule": (
                "dense"
                if chosen is None
                else "target"
                if chosen["param_budget"] is None
                else "budget"
            ),
            "param_budget": None if chosen is None else chosen["param_budget"],
            "smoothed_val_error": None if chosen is None else chosen["smoothed_val_error"],
            "target_val_error": None if chosen is None else chosen["target_val_error"],
            "params": accounting.count_params(net),
            "flops": accounting.count_flops(net),
            "val_error": val_error,
            "test_error": masked_test["error"],
            "compact_test_error": compact_error,
            "epochs": path_epochs,
            "model": str(model),
            "small": small,
        }

    def finish(self):
        """Test every selection once, compact it; write the models, history and report.

        The top-level fields (test_error, params, ..., model.npz) are those of the headline
        selection (``selection``: ``config.headline_selection()``); ``selections`` has them all.
        """
        config = self.config
        headline = config.headline_selection()
        nets = self.selection_networks()
        selections = {
            name: self.test_selection(name, net, val) for name, (net, val) in nets.items()
        }
        self.net = nets[headline][0]
        small = selections[headline].pop("small")
        for entry in selections.values():
            entry.pop("small", None)
        for message in over_budget_warnings(selections):
            self.warn(message)
        save_compact(self.out / "model.npz", small)
        report = self.report(headline, selections)
        save_json(self.out / "history.json", self.history)
        save_json(self.out / "report.json", report)
        save_run_figures(self.history, self.net.masked_layers()[0][1].mask, self.out / "figures",
                         self.data_shape["image_shape"] or (28, 28))
        return report

    def report(self, headline, selections):
        """report.json's dict: the headline selection's figures at the top, all in selections."""
        config = self.config
        params, flops = accounting.count_params(self.net), accounting.count_flops(self.net)
        baseline = accounting.dense_baseline(config.arch, **self.data_shape)
        table = accounting.layer_table(self.net)
        return {
            "arch": config.arch,
            "mode": config.mode,
            "seed": config.seed,
            "augment": config.augment,
            "selection": headline,
            "selections": selections,
            "test_error": selections[headline]["test_error"],
            "compact_test_error": selections[headline]["compact_test_error"],
            "val_error": selections[headline]["val_error"],
            "params": params,
            "flops": flops,
            "epochs_total": self.state["epochs"],
            "epochs_before_pruning": self.state["epochs_before_pruning"],
            "growth_stop_reason": self.state.get("growth_stop_reason"),
            "conv_kept_area": [
                {k: row[k] for k in ("position", "area_density", "flops_weighted_area")}
                for row in table
                if row["type"] == "Conv2d"
            ],
            "params_compression": baseline["params"] / params,
            "flops_compression": baseline["flops"] / flops,
            "dense_baseline": baseline,
            "widths": self.net.widths(),
            "alive": survivors(self.net),
            "layers": table,
            "chosen": self.state["chosen"],
            "stop_reason": self.state.get("stop_reason"),
            "max_params_during_growth": max(
                r.get("params_after_growth", r["params"]) for r in self.history
            ),
            "wall_seconds": self.state["elapsed"],
            "numerics": numerics_record(),
            "data_source": self.data["source"],
            "data": self.data.get("dataset") or {"name": GIVEN_DATA,
                                                 "source": self.data.get("source")},
            "n_train": len(self.data["train"][0]),
            "n_val": len(self.data["val"][0]),
            "config": config.to_dict(),
            "config_changes": self.state.get("config_changes", []),
            "warnings": self.warnings,
        }


REPORT_FIELDS = {"arch": str, "mode": str, "test_error": float, "params": int, "flops": int,
                 "params_compression": float, "flops_compression": float}


def read_report(path):
    """A run's report.json as a dict, checked to hold what the table and ``load_run`` read.

    Raises ReportError naming the file and the field for a missing, unreadable,
    malformed or incomplete report.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.exists():
        raise ReportError(f"{path} not found: run `nestref synthesize --out {path.parent}` first")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path} is not a readable JSON report ({err}); rerun the synthesis "
                          f"with --resume to write it again") from err
    if not isinstance(report, dict):
        raise ReportError(
            f"{path}: the top level must be a JSON object, got a {type(report).__name__}"
        )
    for name, kind in REPORT_FIELDS.items():
        value = report.get(name)
        ok = (isinstance(value, str) if kind is str else
              is_count(value) if kind is int else is_number(value))
        if not ok:
            raise ReportError(f"{path}: field '{name}' is missing or not "
                              f"a{'n' if kind is int else ''} {kind.__name__} (got {value!r}); "
                              f"rewrite it with `nestref synthesize --resume --out {path.parent}`")
    if not isinstance(report.get("data", {}), dict | None):
        raise ReportError(f"{path}: field 'data' must be an object (name, source, checksum), got "
                          f"{report['data']!r}; rewrite it with `nestref synthesize --resume --out "
                          f"{path.parent}`")
    if report["mode"] not in MODES:
        raise ReportError(f"{path}: field 'mode' must be one of {', '.join(MODES)}, got "
                          f"{report['mode']!r}")
    if not report["arch"]:
        raise ReportError(f"{path}: field 'arch' is empty; it names the architecture (a preset "
                          f"such as lenet5, or a spec)")
    return report


def load_run(out_dir):
    """A finished run's (report dict, history list, final masked network) from its directory."""
    out = Path(out_dir)
    for name in ("report.json", "history.json", CHECKPOINT):
        if not (out / name).exists():
            raise FileNotFoundError(
                f"{out / name} not found: is {out} a finished nestref synthesize run?"
            )
    net, _, _ = load_checkpoint(out / CHECKPOINT)
    try:
        history = json.loads((out / "history.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{out / 'history.json'} is not readable JSON ({err})") from err
    if not isinstance(history, list):
        raise ReportError(f"{out / 'history.json'}: the top level must be a list of round records")
    return read_report(out / "report.json"), history, net


def synthesize(config, out_dir, resume=False, on_round=None, on_batch=None, data=None,
               overwrite=False, on_warning=None):
    """Run NeST (or the prune-only baseline) as ``config`` says; returns report.json's dict.

    out_dir receives checkpoint.npz (after every step; the one before it as
    checkpoint.prev.npz), rounds/prune-NNN.npz and rounds/finetuned-NNN.npz,
    selections/<name>/model.npz (each selection's compact network), model.npz (the
    headline selection's), history.json, report.json and figures/. on_round(record) is
    called after every round; on_batch(b, n, loss) after every training batch;
    on_warning(message) when resume had to fall back to the previous checkpoint (default:
    ``warnings.warn``; the messages also go to the report's "warnings").

    resume: continue the run in out_dir from its checkpoint (a fresh start if there is
    none). overwrite: replace the run in out_dir, removing only nestref's own files.
    Without either, a non-empty out_dir is refused (``check_run_dir``). The directory
    and the config are checked before the data is loaded or anything trains.
    """
    if not isinstance(config, SynthesisConfig):
        raise InvalidArgumentError(f"config must be a SynthesisConfig (see "
                                   f"nestref.nest.config.make_config), got {type(config).__name__}")
    config.validate()  # fields may have been changed after construction
    check_writable_dir(out_dir)
    with hold_lock(Path(out_dir) / LOCK, f"run directory {out_dir}"):  # one writer per run
        return _synthesize(config, out_dir, resume, on_round, on_batch, data, overwrite,
                           on_warning)


def _synthesize(config, out_dir, resume, on_round, on_batch, data, overwrite, on_warning):
    """``synthesize``, once this process holds the run directory's lock."""
    has_checkpoint = check_run_dir(out_dir, resume=resume, overwrite=overwrite)
    splits_given = isinstance(data, dict) and {"train", "val", "test", "source"} <= set(data)
    if data is not None and not splits_given:
        raise InvalidArgumentError(
            "data must be the dict load_data(config) returns, with train, val, test and source"
        )
    run = Run(config, None, out_dir, on_round, on_batch, on_warning)
    if has_checkpoint:
        run.restore()  # a bad checkpoint or a refused config change fails before the data is read
    run.use_data(data if data is not None else load_data(config))
    if overwrite:  # only now: a run that cannot start leaves the old one as it was
        clear_run_files(out_dir)
    remove_interrupted_writes(out_dir)
    mark_run_directory(out_dir, {"arch": config.arch, "mode": config.mode, "seed": config.seed})
    return run.run(resume=False)
