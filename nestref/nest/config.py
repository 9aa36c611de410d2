"""Every hyperparameter of a synthesis run, in one validated dataclass.

``SynthesisConfig`` has defaults for every field; ``PRESETS`` hold the recipes the
README's table was measured with. A config can be read from TOML or JSON, and each
field overridden from the command line (``--set key=value``). Unknown keys and
out-of-range values fail before any training, with a message that says what to
change (``ConfigError``).
"""
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import ConfigError
from . import architectures

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@dataclass
class SynthesisConfig:
    """Every hyperparameter of a synthesis run; ``validate`` checks them all at construction.

    On ``--resume`` the config must be the one the run was started with, except for the
    fields in ``RESUME_SAFE_FIELDS``, which change nothing already done:

    * ``lr``, ``prune_lr``: the learning rates of the steps still to run (lower them after
      a divergence);
    * ``data_dir``: where the (same) data lives;
    * ``initial_epochs``, ``growth_epochs``, ``settle_epochs``, ``prune_epochs``,
      ``finetune_epochs``: only while their phase (seed, growth, settle, pruning,
      fine-tuning) has not started.

    Any other change is refused, naming the field (``resume_conflicts``).
    """

    # what to synthesise, and how
    arch: str = "lenet-300-100"
    # "nest" (seed -> grow -> prune), "prune-only" (dense -> prune) or
    # "dense" (the dense network only, trained as prune-only's is)
    mode: str = "nest"
    seed: int = 0
    # data
    data_dir: str | None = None
    n_val: int = 5000  # validation images split off the training set; all decisions use them
    train_limit: int | None = None        # use only the first N training images (quick runs, tests)
    # batches of the growth data (None: one pass over the training split)
    growth_batches: int | None = None
    growth_batch_size: int = 1000
    # seed network
    width_scale: float = 0.4              # 0.4: LeNet-300-100 -> LeNet-120-40
    density: float = 0.1
    # training
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    initial_epochs: int = 3  # seed (or dense, in prune-only mode) training before the first round
    growth_epochs: int = 2                # training after each growth round
    settle_epochs: int = 5  # cosine from lr after growth (or after the dense start), before pruning
    prune_epochs: int = 1                 # retraining after each pruning round
    prune_lr: float = 0.02
    finetune_epochs: int = 10             # cosine from prune_lr down, after the result is chosen
    # prune-only / dense: epochs of the dense network before pruning (dense: in all), the last
    # settle_epochs of them on the cosine; None: initial_epochs + settle_epochs. `nestref study`
    # sets it from the NeST run of the same arch and seed (docs/nest.md#ours-equal-budget)
    dense_epochs: int | None = None
    # connection growth
    growth_ratio: float = 0.1  # fraction of each layer's dormant connections grown per round
    growth_init: str = "gradient"         # "gradient" (-lr * G) [ours] or "zero"
    # neuron / feature-map growth
    # neurons (maps) added per round, as a fraction of the target width
    neuron_fraction: float = 0.1
    birth_ratio: float = 0.05
    birth_strength_max: float = 0.3
    birth_strength_min: float = 0.003
    birth_sign: str = "positive"          # [ours]; "random" is the paper's
    feature_map_candidates: int = 10
    max_growth_rounds: int = 6
    patience: int = 2  # growth rounds without validation gain before pruning starts
    # pruning
    # per masked layer; empty: the arch's default
    prune_fractions: list[float] = field(default_factory=list)
    # partial-area convolution: fraction of kept (map, map, position) per round
    area_fraction: float = 0.05
    # what a round's area_fraction counts: "contribution" (the paper's: positions, smallest
    # contribution first) or "flops" (FLOPs, smallest contribution per FLOP first) [ours]
    area_rank: str = "contribution"
    prune_floor_params: int = 3000        # prune down to this many params ...
    # ... or until the smoothed validation error exceeds the settled one by
    max_error_increase: float = 0.01
    # max(this much, this fraction of it) (docs/nest.md#ours-prune-stopping)
    max_relative_error_increase: float = 0.5
    max_prune_rounds: int = 60
    smoothing: int = 3  # rounds over which validation error is averaged when choosing
    # a "budget-<N>" selection each: the best round with at most N params [ours]; besides the
    # "target" selection: ...
    param_budgets: list[int] = field(default_factory=list)
    tolerance: float = 0.002  # ... the smallest round within this much of the settled net's error
    # the selection report.json's top-level fields and model.npz are of;
    # None: the first budget's, or "target" without budgets
    report_selection: str | None = None
    augment: bool = False  # random affine distortions of the training images (reported when on)

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raise ConfigError naming every field that is out of range, or that contradicts
        another."""
        problems = self._range_problems() + self._contradictions()
        if problems:
            raise ConfigError("invalid synthesis config:\n  " + "\n  ".join(problems))

    def _range_problems(self):
        """The fields whose value is out of its own range, each as 'name=value: expected ...'."""
        problems = []
        need = _problem_collector(self, problems)
        if architectures.problem(self.arch) is not None:
            problems.append(f"arch={self.arch!r}: {architectures.problem(self.arch)}")
        need(self.mode in MODES, "mode", "'nest', 'prune-only' or 'dense'")
        need(self.growth_init in ("gradient", "zero"), "growth_init", "'gradient' or 'zero'")
        need(self.birth_sign in ("positive", "random"), "birth_sign", "'positive' or 'random'")
        need(self.area_rank in ("contribution", "flops"), "area_rank",
             "'contribution' or 'flops'")
        for name in ("n_val", "batch_size", "growth_batch_size", "feature_map_candidates",
                     "smoothing"):
            need(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "an integer >= 1")
        for name in ("initial_epochs", "growth_epochs", "settle_epochs", "prune_epochs",
                     "finetune_epochs", "max_growth_rounds", "max_prune_rounds", "patience",
                     "prune_floor_params", "seed"):
            need(_is_int(getattr(self, name)) and getattr(self, name) >= 0, name, "an integer >= 0")
        for name in ("train_limit", "growth_batches", "dense_epochs"):
            value = getattr(self, name)
            need(value is None or (_is_int(value) and value >= 1), name, "null or an integer >= 1")
        for name in ("lr", "prune_lr", "birth_strength_max", "birth_strength_min"):
            need(_is_number(getattr(self, name)) and getattr(self, name) > 0, name, "a number > 0")
        for name in ("width_scale", "density", "growth_ratio", "neuron_fraction", "birth_ratio"):
            need(
                _is_number(getattr(self, name)) and 0 < getattr(self, name) <= 1,
                name,
                "a number in (0, 1]",
            )
        for name in ("area_fraction", "momentum"):
            need(
                _is_number(getattr(self, name)) and 0 <= getattr(self, name) < 1,
                name,
                "a number in [0, 1)",
            )
        for name in ("weight_decay", "max_error_increase", "max_relative_error_increase",
                     "tolerance"):
            need(
                _is_number(getattr(self, name)) and getattr(self, name) >= 0, name, "a number >= 0"
            )
        need(isinstance(self.augment, bool), "augment", "true or false")
        return problems

    def _contradictions(self):
        """The list fields that are malformed and the fields that contradict another."""
        problems = []
        need = _problem_collector(self, problems)
        need(
            isinstance(self.prune_fractions, (list, tuple))
            and all(_is_number(f) and 0 <= f < 1 for f in self.prune_fractions),
            "prune_fractions",
            "a list of numbers in [0, 1), one per masked layer",
        )
        need(
            self.data_dir is None or isinstance(self.data_dir, str),
            "data_dir",
            "null or a directory path (a string)",
        )
        need(
            isinstance(self.param_budgets, (list, tuple))
            and all(_is_int(b) and b >= 1 for b in self.param_budgets)
            and len(set(self.param_budgets)) == len(self.param_budgets),
            "param_budgets",
            "a list of distinct integers >= 1 (parameter budgets)",
        )
        if isinstance(self.param_budgets, (list, tuple)) and self.report_selection is not None:
            need(self.report_selection in self.selection_names(), "report_selection",
                 f"one of {self.selection_names()}")
        if self.dense_epochs is not None:
            need(
                self.mode != "nest",
                "dense_epochs",
                "null in mode 'nest' (it sets the dense network's epochs)",
            )
            if _is_int(self.dense_epochs) and _is_int(self.settle_epochs):
                need(
                    self.dense_epochs >= self.settle_epochs,
                    "dense_epochs",
                    f">= settle_epochs ({self.settle_epochs})",
                )
        if _is_number(self.birth_strength_min) and _is_number(self.birth_strength_max):
            need(
                self.birth_strength_min <= self.birth_strength_max,
                "birth_strength_min",
                "<= birth_strength_max",
            )
        if _is_int(self.train_limit) and _is_int(self.n_val):
            need(
                self.n_val < self.train_limit,
                "n_val",
                f"< train_limit={self.train_limit} (some images must be left to train on)",
            )
        if (isinstance(self.arch, str) and architectures.problem(self.arch) is None
                and isinstance(self.prune_fractions, (list, tuple)) and self.prune_fractions):
            masked = masked_layer_count(self.arch)
            need(
                len(self.prune_fractions) == masked,
                "prune_fractions",
                f"{masked} numbers for {self.arch} (one per masked layer), "
                f"or [] for the arch's default",
            )
        return problems

    def selection_names(self):
        """The selections a run makes from its one pruning trajectory: "target", then one
        "budget-<N>" per param budget; a dense run has one, "dense"."""
        if self.mode == "dense":
            return ["dense"]
        return ["target"] + [f"budget-{b}" for b in self.param_budgets]

    def headline_selection(self):
        """The selection report.json's top-level fields describe (``report_selection``)."""
        if self.report_selection is not None:
            return self.report_selection
        names = self.selection_names()
        return names[1] if len(names) > 1 else names[0]

    def to_dict(self):
        return asdict(self)


MODES = ("nest", "prune-only", "dense")


def _problem_collector(config, problems):
    """need(ok, name, expected): note in ``problems`` that field ``name`` is not as expected,
    unless ``ok``."""
    def need(ok, name, expected):
        if not ok:
            problems.append(f"{name}={getattr(config, name)!r}: expected {expected}")
    return need


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def masked_layer_count(arch):
    """How many masked (Dense and Conv2d) layers ``arch``, a name or a spec, has: one pruning
    fraction each."""
    return len(architectures.get(arch).prune_fractions)

# phase of the run -> the epochs field that only that phase reads
_PHASE_EPOCHS = {"seed": "initial_epochs", "grow": "growth_epochs", "settle": "settle_epochs",
                 "prune": "prune_epochs", "finetune": "finetune_epochs"}
_PHASES = ("seed", "grow", "settle", "prune", "finetune", "done")
RESUME_SAFE_FIELDS = ("lr", "prune_lr", "data_dir", *_PHASE_EPOCHS.values())


def with_defaults(saved):
    """A saved config dict with the fields added since it was written at their defaults: a
    new field's default is what the code did before the field existed."""
    return {**SynthesisConfig().to_dict(), **saved}


def resume_conflicts(saved, config, phase, round_, mid_step=False):
    """The fields in which ``config`` differs from a run's ``saved`` config dict and may not, on
    resume.

    phase, round_: where the run stands (the next step to run, the rounds done in it);
    mid_step: the run stopped between the epochs of that step, so its phase has started.
    A learning rate or the data directory may always change; a phase's epochs only while
    the phase has not started. Returns [(field, saved value, new value)], sorted.
    """
    ours, saved = config.to_dict(), with_defaults(saved)
    started = {
        p: _PHASES.index(phase) > _PHASES.index(p) or (p == phase and (round_ > 0 or mid_step))
        for p in _PHASE_EPOCHS
    }
    safe = {"lr", "prune_lr", "data_dir"} | {f for p, f in _PHASE_EPOCHS.items() if not started[p]}
    return [
        (k, saved.get(k, "(absent)"), ours.get(k, "(absent)"))
        for k in sorted(set(ours) | set(saved))
        if ours.get(k) != saved.get(k) and k not in safe
    ]


# Recipes for the paper's rows (README: "Results"; docs/study.md), from the
# architecture table; an mlp:/conv: spec's derived preset is found by make_config too.
PRESETS = architectures.presets()


def config_field_names():
    return [f.name for f in fields(SynthesisConfig)]


def make_config(preset=None, file=None, overrides=None, override_origins=None):
    """Build a config: the preset's values, then a TOML/JSON file's, then ``overrides`` (a dict).

    A bad value's message says where it came from (the preset, the file, or an override:
    ``override_origins[key]``, e.g. "--data-dir", else "--set").
    """
    values, origin = {}, {}
    if preset is not None:
        preset_values = architectures.find_preset(preset) if isinstance(preset, str) else None
        if preset_values is None:
            raise ConfigError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)} "
                              f"or an mlp:/conv: spec")
        values.update(preset_values)
        origin.update(dict.fromkeys(preset_values, f"preset {preset}"))
    if file is not None:
        from_file = read_config_file(file)
        values.update(from_file)
        origin.update(dict.fromkeys(from_file, f"config file {file}"))
    values.update(overrides or {})
    origin.update({k: (override_origins or {}).get(k, "--set") for k in overrides or {}})
    if "param_budget" in values:  # the one-budget key of earlier configs
        budget = values.pop("param_budget")
        if budget is not None and budget not in values.get("param_budgets", []):
            values["param_budgets"] = [budget, *values.get("param_budgets", [])]
    unknown = sorted(set(values) - set(config_field_names()))
    if unknown:
        sources = sorted({origin[k] for k in unknown})
        raise ConfigError(f"unknown config key(s) {unknown} (from {', '.join(sources)}); "
                          f"valid keys: {', '.join(config_field_names())}")
    try:
        return SynthesisConfig(**values)
    except ConfigError as err:
        sources = sorted(set(origin.values()))
        if not sources:
            raise
        raise ConfigError(f"{err}\n(values from {', '.join(sources)})") from None


def read_config_file(path):
    """A dict of config values from a .toml file, or a .json file (any other name is read as JSON).

    Raises ConfigError, naming the file, for a missing, unreadable or malformed file, or
    one whose top level is not a table / object of key = value pairs.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; pass a .toml or .json file")
    if path.suffix.lower() in (".yaml", ".yml"):
        raise ConfigError(f"config file {path} is YAML, which nestref does not read: configs are "
                          f"TOML (.toml: one key = value a line, e.g. lr = 0.05) or JSON (.json: "
                          f"{{\"lr\": 0.05}}); write it in one of them")
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    try:
        text = path.read_text(encoding="utf-8")
    except PermissionError as err:
        raise ConfigError(
            f"config file {path} cannot be read (permission denied); make it readable"
        ) from err
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {path} is not UTF-8 text ({err.reason}); is it really a {kind} file?"
        ) from err
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from err
    try:
        values = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        how = ("" if path.suffix in (".toml", ".json") else
               f"; a config file is TOML if its name ends in .toml, else JSON: write it as JSON "
               f"({{\"lr\": 0.05}}), or name a TOML file (lr = 0.05) {path.stem}.toml")
        raise ConfigError(f"config file {path} is not valid {kind}: {err}{how}") from err
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path}: the top level must be an object of key: value "
                          f"pairs (e.g. {{\"lr\": 0.05}}), got a {type(values).__name__}")
    return values


def parse_override(text):
    """'key=value' -> (key, value), the value parsed as JSON where it can be (numbers, lists, null,
    true)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().replace("-", "_"), value
