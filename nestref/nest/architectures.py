"""One table per architecture: everything nestref knows about a network it can synthesise.

Each entry of ``TABLE`` is an ``Architecture``: how to build it (its stages), NeST's seed
(``width_scale``, ``density``), the default pruning fractions, the presets, the training
recipe of its dense baseline, the paper's rows, the dense baseline the paper counts (checked
against ``nestref.nest.accounting`` by the tests) and the notebooks' quick-mode overrides.
``models``, ``accounting``, ``prune``, ``config``, ``cli`` and ``paper`` read this table;
nothing about an architecture is written anywhere else.

Besides the two LeNets, ``--arch`` takes a network of the user's own, written as a spec:

``mlp:784-300-100-10``
    A multilayer perceptron: input size, hidden widths, class count, separated by ``-``.
    Each hidden layer is a masked Dense followed by ReLU. The input size must equal the
    pixels of one image of the data (channels x height x width) and the last number its
    class count.

``conv:c20k5-p2-c50k5-p2-d500-d10``
    A small CNN, stages separated by ``-``:

    ========  ==========================================================
    ``cNkK``  masked convolution, N feature maps, K x K kernel, stride 1
    ``pK``    max-pooling over K x K windows, stride K
    ``r``     ReLU (convolutions have none unless written, as in Caffe's LeNet-5)
    ``dN``    masked Dense of width N (a Flatten is put before the first);
              every Dense but the last is followed by ReLU
    ========  ==========================================================

    At least one convolution, and the last stage a Dense whose width is the class
    count. The input's channels and size come from the data. ``lenet5`` is exactly
    ``conv:c20k5-p2-c50k5-p2-d500-d10``.

A spec gets what a LeNet has, derived the same way: the seed of its family (an MLP that of
LeNet-300-100, a CNN that of LeNet-5), the default pruning fractions by the rule below, a
preset named after the spec (the family's schedule, without the LeNet's parameter budget,
its own floor and augmentation, which were tuned on MNIST digits: pruning stops at the
config's default ``prune_floor_params = 3000``) and the family's training recipe.

Default pruning fractions per masked layer (one pruning round), the rule both LeNets follow:
the first convolution 0.02, later convolutions 0.08, the first hidden Dense 0.1, later hidden
Dense layers 0.08, the output layer 0.04 (a uniform fraction starves a 10-unit output
layer). For LeNet-300-100 that is (0.1, 0.08, 0.04) [ours, measured]; for LeNet-5 (conv1,
conv2, fc1, fc2) (0.02, 0.08, 0.1, 0.04) [ours] (docs/nest.md#ours-prune-fractions):
Han et al. (2015) end LeNet-5 at densities of about 66%, 12%, 8% and 19%; at fc1's 0.1 per
round that is ~24 rounds, and 1 - density**(1/24) gives ~0.02, ~0.08, 0.1, ~0.07 per round,
the output held at 0.04.

This module stands just above ``layers``: it builds lists of layers, and ``models`` wraps
them into a ``Network``.
"""

import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..checks import is_int
from ..core.layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU
from ..errors import InvalidArgumentError

SPEC_HELP = (
    "an architecture is 'lenet-300-100', 'lenet5', an MLP spec such as "
    "'mlp:784-300-100-10' (input size, hidden widths, classes) or a CNN spec such as "
    "'conv:c20k5-p2-c50k5-p2-d500-d10' (cNkK conv, pK max-pool, r ReLU, dN dense; "
    "the last dense is the class count)"
)


@dataclass(frozen=True)
class Architecture:
    """Everything about one architecture; see the module docstring.

    stages: ("conv", maps, kernel) | ("pool", size) | ("relu",) | ("dense", width), in order;
    the last is the output Dense. fixed_io: True for a spec, whose input size (MLP) and
    class count are written in it and checked against the data; False for a LeNet, which
    takes the data's image shape and class count.
    """

    name: str
    family: str  # "mlp" or "conv"
    stages: tuple
    input_shape: tuple  # one example, as designed: (784,) or (1, 28, 28)
    fixed_io: bool = True
    net_prefix: str | None = None  # LeNets: "lenet" -> Network name "lenet-120-40"
    seed: dict = field(default_factory=dict)
    presets: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    dense_baseline: dict | None = None  # the paper's count, on MNIST
    paper_rows: tuple = ()
    quick: dict = field(default_factory=dict)

    @property
    def classes(self):
        """The output width as designed."""
        return self.stages[-1][1]

    @property
    def prune_fractions(self):
        """Default per-masked-layer fractions of one pruning round (the module docstring's rule)."""
        fractions, convs, hidden = [], 0, 0
        masked = [s for s in self.stages if s[0] in ("conv", "dense")]
        for i, stage in enumerate(masked):
            if stage[0] == "conv":
                fractions.append(0.02 if convs == 0 else 0.08)
                convs += 1
            elif i == len(masked) - 1:
                fractions.append(0.04)
            else:
                fractions.append(0.1 if hidden == 0 else 0.08)
                hidden += 1
        return tuple(fractions)

    def network_input_shape(self, image_shape=None):
        """The network's input shape for images of ``image_shape`` ((H, W) or (C, H, W))."""
        if image_shape is None:
            return self.input_shape
        given = tuple(int(s) for s in image_shape)
        image_shape = (1, *given) if len(given) == 2 else given
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise InvalidArgumentError(
                f"image_shape must be (H, W) or (C, H, W), got {image_shape}"
            )
        if self.family == "conv":
            return image_shape
        pixels = math.prod(image_shape)
        if self.fixed_io and pixels != self.input_shape[0]:
            raise InvalidArgumentError(
                f"{self.name} takes {self.input_shape[0]} inputs, but one image of the data has "
                f"{' x '.join(map(str, given))} = {pixels} values; write the spec with "
                f"{pixels} as its first number"
            )
        return (pixels,)

    def output_width(self, classes=None):
        if classes is None:
            return self.classes
        if not is_int(classes) or classes < 2:
            raise InvalidArgumentError(f"classes must be an integer >= 2 (the data's class count), "
                                       f"got {classes!r}")
        if self.fixed_io and classes != self.classes:
            raise InvalidArgumentError(
                f"{self.name} ends in {self.classes} outputs, but the data has {classes} classes; "
                f"make the spec's last width {classes}"
            )
        return int(classes)

    def build_layers(
        self,
        width_scale=1.0,
        density=1.0,
        rng=None,
        dtype=np.float32,
        image_shape=None,
        classes=None,
    ):
        """(layers, input shape, network name) for the seed or dense network.

        Hidden widths (feature maps and hidden Dense units) are scaled by ``width_scale``
        (at least 1); ``density`` is each masked layer's active fraction; the output
        width is the class count.
        """
        shape = self.network_input_shape(image_shape)
        n_out = self.output_width(classes)
        layers, widths = [], []
        for index, stage in enumerate(self.stages):
            kind = stage[0]
            if kind == "dense":
                last = index == len(self.stages) - 1
                width = n_out if last else max(1, round(stage[1] * width_scale))
                if len(shape) == 3:
                    layers.append(Flatten())
                    shape = (math.prod(shape),)
                layers.append(Dense(shape[0], width, density, rng, dtype))
                if not last:
                    layers.append(ReLU())
                    widths.append(width)
                shape = (width,)
            elif kind == "relu":
                layers.append(ReLU())
            else:
                shape = self._spatial_stage(
                    stage, shape, width_scale, density, rng, dtype, layers, widths
                )
        input_shape = self.network_input_shape(image_shape)
        return layers, input_shape, self._network_name(widths, layers)

    def _spatial_stage(self, stage, shape, width_scale, density, rng, dtype, layers, widths):
        c, h, w = shape
        size = stage[2] if stage[0] == "conv" else stage[1]
        if h < size or w < size:
            what = f"a {size}x{size} kernel" if stage[0] == "conv" else f"{size}x{size} pooling"
            raise InvalidArgumentError(
                f"{self.name} cannot take these images: {what} meets maps of {h}x{w}; use larger "
                f"images, or a conv: spec with smaller kernels or fewer pooling stages"
            )
        if stage[0] == "pool":
            layers.append(MaxPool2d(size))
            return c, (h - size) // size + 1, (w - size) // size + 1
        maps = max(1, round(stage[1] * width_scale))
        layers.append(Conv2d(c, maps, size, density=density, rng=rng, dtype=dtype))
        widths.append(maps)
        return maps, h - size + 1, w - size + 1

    def _network_name(self, hidden_widths, layers):
        if self.net_prefix is not None:
            return "-".join([self.net_prefix, *map(str, hidden_widths)])
        outputs = iter([layer.n_out for layer in layers if isinstance(layer, (Conv2d, Dense))])
        if self.family == "mlp":
            return "mlp:" + "-".join(
                [str(layers[0].n_in), *(str(next(outputs)) for _ in self.stages)]
            )
        tokens = []
        for stage in self.stages:
            if stage[0] == "conv":
                tokens.append(f"c{next(outputs)}k{stage[2]}")
            elif stage[0] == "dense":
                tokens.append(f"d{next(outputs)}")
            else:
                tokens.append(f"p{stage[1]}" if stage[0] == "pool" else "r")
        return "conv:" + "-".join(tokens)


# --------------------------------------------------------------------------- specs


def parse_mlp(text):
    """'784-300-100-10' -> (input size, stages)."""
    parts = text.split("-")
    # ASCII digits only: "²".isdigit() is True, but int("²") fails
    if len(parts) < 2 or not all(re.fullmatch("[0-9]+", p) and int(p) >= 1 for p in parts):
        raise InvalidArgumentError(
            f"bad MLP spec 'mlp:{text}': expected integers >= 1 separated by '-', the input size "
            f"first and the class count last, e.g. mlp:784-300-100-10"
        )
    sizes = [int(p) for p in parts]
    return sizes[0], tuple(("dense", n) for n in sizes[1:])


_CONV_TOKEN = re.compile(r"c([0-9]+)k([0-9]+)|p([0-9]+)|r|d([0-9]+)")  # \d takes any script's


def parse_conv(text):
    """'c20k5-p2-c50k5-p2-d500-d10' -> stages."""

    def bad(why):
        return InvalidArgumentError(f"bad CNN spec 'conv:{text}': {why}. {SPEC_HELP}")

    stages = []
    for token in text.split("-"):
        match = _CONV_TOKEN.fullmatch(token)
        if match is None:
            raise bad(f"'{token}' is not a stage")
        maps, kernel, pool, width = match.groups()
        if width is not None:
            stages.append(("dense", int(width)))
        elif stages and stages[-1][0] == "dense":
            raise bad(f"'{token}' after a dense stage (dense stages come last)")
        elif maps is not None:
            stages.append(("conv", int(maps), int(kernel)))
        elif pool is not None:
            stages.append(("pool", int(pool)))
        else:
            stages.append(("relu",))
        if any(n == 0 for n in stages[-1][1:]):
            raise bad(f"'{token}' has a zero size")
    if not any(s[0] == "conv" for s in stages):
        raise bad("no convolution (an MLP is written mlp:...)")
    if stages[-1][0] != "dense":
        raise bad("the last stage must be the output dense layer, e.g. d10")
    return tuple(stages)


# --------------------------------------------------------------------------- the LeNets

_MLP_SCHEDULE = dict(
    augment=True, growth_epochs=3, settle_epochs=20, prune_epochs=2, finetune_epochs=30
)
_CONV_SCHEDULE = dict(
    augment=True,
    lr=0.02,
    prune_lr=0.01,
    weight_decay=5e-4,
    initial_epochs=2,
    growth_epochs=1,
    max_growth_rounds=3,
    growth_batches=10,
    settle_epochs=8,
    prune_epochs=2,
    finetune_epochs=10,
    max_prune_rounds=30,
)
_MLP_SEED = dict(width_scale=0.4, density=0.1)  # LeNet-300-100 -> LeNet-120-40, 10% dense
_CONV_SEED = dict(width_scale=0.5, density=0.3)

TABLE = {
    "lenet-300-100": Architecture(
        name="lenet-300-100",
        family="mlp",
        stages=parse_mlp("784-300-100-10")[1],
        input_shape=(784,),
        fixed_io=False,
        net_prefix="lenet",
        seed=_MLP_SEED,
        # Recipes for the paper's rows (README: "Results"; docs/study.md).
        presets={
            # one trajectory, both paper rows (3.8K and 7.8K params): "-accurate" is the
            # same run reported at its 7.8K selection (docs/nest.md#ours-choice)
            "lenet-300-100": dict(
                arch="lenet-300-100",
                **_MLP_SCHEDULE,
                param_budgets=[3800, 7800],
                prune_floor_params=3000,
            ),
            "lenet-300-100-accurate": dict(
                arch="lenet-300-100",
                **_MLP_SCHEDULE,
                param_budgets=[3800, 7800],
                prune_floor_params=3000,
                report_selection="budget-7800",
            ),
        },
        # Recipe of the dense baseline (`nestref train --arch NAME`; README: "Commands").
        recipe={"epochs": 30, "lr": 0.05, "batch_size": 64, "weight_decay": 1e-4},
        dense_baseline={"params": 266610, "flops": 532400},
        paper_rows=(
            # method, test error, params, FLOPs
            ("dense baseline", 0.0160, 266_610, 532_400),
            ("pruning only (Han et al. 2015)", 0.0159, 22_000, 43_000),
            ("NeST, compact", 0.0158, 3_800, 6_700),
            ("NeST, accurate", 0.0129, 7_800, 14_900),
        ),
        quick=dict(
            train_limit=1500,
            n_val=300,
            initial_epochs=1,
            growth_epochs=1,
            settle_epochs=1,
            max_growth_rounds=2,
            growth_batch_size=500,
            prune_epochs=1,
            max_prune_rounds=5,
            finetune_epochs=1,
            prune_fractions=[0.3, 0.25, 0.1],
            max_error_increase=1.0,
        ),
    ),
    "lenet5": Architecture(
        name="lenet5",
        family="conv",
        stages=parse_conv("c20k5-p2-c50k5-p2-d500-d10"),
        input_shape=(1, 28, 28),
        fixed_io=False,
        net_prefix="lenet5",
        seed=_CONV_SEED,
        presets={
            "lenet5": dict(
                arch="lenet5",
                **_CONV_SEED,
                **_CONV_SCHEDULE,
                prune_fractions=[0.03, 0.12, 0.15, 0.06],
                param_budgets=[5800],
                prune_floor_params=4500,
            ),
        },
        recipe={"epochs": 15, "lr": 0.02, "batch_size": 64, "weight_decay": 5e-4},
        dense_baseline={"params": 431080, "flops": 4586000},
        paper_rows=(
            ("dense baseline", 0.0080, 431_080, 4_586_000),
            ("pruning only (Han et al. 2015)", 0.0077, 35_000, 734_000),
            ("NeST", 0.0077, 5_800, 105_000),
        ),
        quick=dict(
            train_limit=800,
            n_val=200,
            initial_epochs=1,
            growth_epochs=1,
            settle_epochs=0,
            max_growth_rounds=1,
            growth_batches=2,
            growth_batch_size=200,
            feature_map_candidates=3,
            prune_epochs=1,
            max_prune_rounds=2,
            finetune_epochs=1,
            prune_fractions=[0.1, 0.2, 0.3, 0.1],
            max_error_increase=1.0,
        ),
    ),
}

# model, method, test error, params, FLOPs: the paper's MNIST table, row by row
PAPER_ROWS = [(name, *row) for name, entry in TABLE.items() for row in entry.paper_rows]


def _from_spec(arch):
    family, _, text = arch.partition(":")
    if family == "mlp":
        n_in, stages = parse_mlp(text)
        input_shape, like = (n_in,), TABLE["lenet-300-100"]
        seed, schedule = _MLP_SEED, _MLP_SCHEDULE
    else:
        stages, input_shape, like = parse_conv(text), (1, 28, 28), TABLE["lenet5"]
        seed, schedule = _CONV_SEED, _CONV_SCHEDULE
    preset = dict(arch=arch, **seed, **{**schedule, "augment": False})
    quick = {k: v for k, v in like.quick.items() if k != "prune_fractions"}
    return Architecture(
        name=arch,
        family=family,
        stages=stages,
        input_shape=input_shape,
        seed=seed,
        presets={arch: preset},
        recipe=dict(like.recipe),
        quick=quick,
    )


def get(arch):
    """The ``Architecture`` for a name of ``TABLE`` or an ``mlp:`` / ``conv:`` spec."""
    if isinstance(arch, str) and arch in TABLE:
        return TABLE[arch]
    if isinstance(arch, str) and arch.startswith(("mlp:", "conv:")):
        return _from_spec(arch)
    raise InvalidArgumentError(
        f"unknown architecture {arch!r}; expected one of {sorted(TABLE)} or a spec: {SPEC_HELP}"
    )


def problem(arch):
    """None if ``arch`` names an architecture, else the message saying why not (config checks)."""
    try:
        get(arch)
    except InvalidArgumentError as err:
        return str(err)
    return None


def names():
    """The named architectures, sorted."""
    return sorted(TABLE)


def presets():
    """Every named preset: {preset name: config values}."""
    return {name: values for entry in TABLE.values() for name, values in entry.presets.items()}


def find_preset(name):
    """A named preset's values, or the derived preset of an ``mlp:``/``conv:`` spec, or None."""
    named = presets()
    if name in named:
        return dict(named[name])
    if isinstance(name, str) and name.startswith(("mlp:", "conv:")):
        return dict(get(name).presets[name])
    return None


def default_preset(arch):
    """The preset a run of ``arch`` starts from when none is named: the arch's own."""
    return arch if find_preset(arch) is not None else None
