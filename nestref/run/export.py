"""Taking a synthesized network out of nestref: ONNX export and prediction on saved images.

``export_onnx(run, path)`` writes the final network of a run (``nestref synthesize --out
RUN``, or a checkpoint file of ``nestref train``) as an ONNX model that onnxruntime (or any
ONNX runtime) executes: input ``"input"`` of shape (N, *input_shape) float32 in [0, 1],
output ``"logits"`` (N, classes). It is built from the masked ``nestref.core.network.Network``
that the run's checkpoint holds, layer by layer:

    Dense      Gemm with the effective weight W*M as a dense matrix (transB=1), and the bias
    Conv2d     Conv with W*M; with a partial-area mask, each input map i with restricted
               kernels (o, i) gets one Conv of map i over those kernels, multiplied by their
               0/1 areas and summed with the whole-area kernels' Conv, exactly as
               ``Conv2d.forward`` computes
    MaxPool2d  MaxPool (floor, as nestref's), ReLU Relu, Flatten Flatten(axis=1)

Sparse layers are written as their dense small matrices, zeros where connections were
pruned: the network left after NeST's neuron and feature-map removal is small (a few
thousand parameters), every runtime executes dense Gemm/Conv fast, and the ONNX file
is then exact and portable. ``nestref.run.compact`` remains the place for sparse execution.

``predict_logits(run, images)`` / ``predict_classes`` apply the same network to an array
of images (``nestref predict RUN IMAGES.npy``), after checking its shape and dtype.

The ``onnx`` package is an optional extra (``pip install -e ".[onnx]"``); it is imported
only when exporting.
"""

from pathlib import Path

import numpy as np

from ..core.layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU
from ..data.datasets import channels_last_problem, scale_pixels
from ..data.storage import atomic_write_bytes, check_writable_dir, previous_path
from ..errors import (
    DataError,
    InvalidArgumentError,
    ModelFileError,
    OutputExistsError,
    OutputPathError,
)
from .checkpoint import load_checkpoint
from .run_files import CHECKPOINT

ONNX_OPSET = 13


class MissingDependencyError(InvalidArgumentError):
    """An optional package that the requested feature needs is not installed."""


def load_network(run, unfinished=False):
    """The final masked Network of a run directory (its checkpoint.npz) or of a checkpoint file.

    A synthesis run that has not finished (killed during growth, say) is refused with the phase
    it stopped in (ModelFileError), unless ``unfinished``: its network is then taken as it is.
    """
    path = Path(run)
    given_directory = path.is_dir()
    if given_directory:
        path = path / CHECKPOINT
        if not path.is_file():
            raise ModelFileError(
                f"{run}: no {CHECKPOINT} inside; pass the --out directory of a "
                f"finished `nestref synthesize` run (or a `nestref train` checkpoint file)"
            )
    elif not path.is_file():
        raise ModelFileError(f"{run}: no such run directory or checkpoint file")
    try:
        net, _, state = load_checkpoint(path)
    except (KeyError, ValueError) as err:
        if given_directory:  # the run directory is what was passed: its checkpoint is damaged
            hint = (f"; if {run} was copied, copy it again; else run it again with `nestref "
                    f"synthesize --resume --out {run}` and the options that started it (it "
                    f"falls back to {previous_path(CHECKPOINT)} if that one is intact)")
        elif (path.parent / CHECKPOINT).is_file() and path.name != CHECKPOINT:
            hint = f"; pass the run directory {path.parent} instead"
        else:
            hint = ""
        raise ModelFileError(f"{path}: not a readable nestref checkpoint ({err}){hint}") from err
    if not unfinished:
        _refuse_unfinished(run, path, state)
    return net


def _refuse_unfinished(run, path, state):
    """ModelFileError if ``state`` is the checkpoint of a synthesis run that has not finished:
    still training, or trained but without its report.json."""
    progress = state.get("run") if isinstance(state, dict) else None
    if not isinstance(progress, dict):
        return  # a `nestref train` checkpoint: each epoch's is a whole network
    phase = progress.get("phase")
    if phase == "done" and (path.parent / "report.json").is_file():
        return
    where = ("finished training but stopped before writing report.json" if phase == "done" else
             f"stopped in its {phase} phase (round {progress.get('round')})")
    config = state.get("config") if isinstance(state.get("config"), dict) else {}
    command = (f"nestref synthesize --arch {config.get('arch', 'ARCH')} --mode "
               f"{config.get('mode', 'nest')} --out {path.parent} --resume")
    raise ModelFileError(f"{run} is an unfinished run: it {where}; finish it with `{command}` "
                         f"(and any --preset/--config/--set/--quick that started it), or pass "
                         f"--unfinished to take its network as it is now")


# ------------------------------------------------------------------ prediction
def prepare_images(images, input_shape):
    """Check an array of images against a network's input and return float32 (N, *input_shape).

    Accepted: (N, *input_shape); (N, H, W) for an input (1, H, W); for a flat input (D,),
    any (N, ...) with D values per image. uint8 pixels are scaled by 1/255; floats must be
    finite and within [0, 1]; anything else is refused with what to pass instead.
    """
    x = np.asarray(images)
    input_shape = tuple(input_shape)
    per_image = x.shape[1:]
    fits = (
        per_image == input_shape
        or (len(input_shape) == 3 and input_shape[0] == 1 and per_image == input_shape[1:])
        or (len(input_shape) == 1 and x.ndim >= 2 and int(np.prod(per_image)) == input_shape[0])
    )
    if not fits and channels_last_problem(x.shape):
        raise DataError(channels_last_problem(x.shape))
    if x.ndim < 2 or not fits:
        raise DataError(
            f"images of shape {x.shape} do not fit the network's input {input_shape}: "
            f"pass an array (N, {', '.join(map(str, input_shape))})"
            + (f" or (N, {input_shape[1]}, {input_shape[2]})" if len(input_shape) == 3 else "")
        )
    if x.dtype == np.uint8:
        x = scale_pixels(x)
    elif x.dtype.kind == "f":
        if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
            raise DataError(
                "float images must be finite and within [0, 1] (the network was trained on "
                "pixels / 255); pass uint8 pixels 0-255 or scale the floats"
            )
        x = x.astype(np.float32)
    else:
        raise DataError(f"images of dtype {x.dtype}: pass uint8 pixels 0-255 or floats in [0, 1]")
    return x.reshape((len(x),) + input_shape)


def _load_images(path):
    path = Path(path)
    if path.suffix != ".npy":
        raise DataError(f"{path}: expected a .npy file of images (np.save)")
    try:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":  # else np.load reads it as a pickle, and says so
                raise DataError(f"{path}: not a .npy file (it does not start as np.save writes "
                                f"one); save the images with np.save")
        return np.load(path, allow_pickle=False)
    except DataError:
        raise
    except FileNotFoundError as err:
        raise DataError(f"{path}: no such file") from err
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npy array ({err})") from err


def predict_logits(run, images, unfinished=False):
    """Logits (N, classes) of the run's network on ``images`` (an array or a .npy path);
    ``unfinished`` as for ``load_network``."""
    net = load_network(run, unfinished)
    images = _load_images(images) if isinstance(images, (str, Path)) else images
    return net.predict(prepare_images(images, net.input_shape))


def predict_classes(run, images, unfinished=False):
    """The predicted class (argmax of the logits) of every image, as an int array (N,)."""
    return predict_logits(run, images, unfinished).argmax(axis=1)


# ------------------------------------------------------------------ ONNX
def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as err:
        raise MissingDependencyError(
            "ONNX export needs the onnx package: pip install onnx (or the extra: "
            'pip install -e ".[onnx]", which also brings onnxruntime)'
        ) from err
    return onnx, helper, numpy_helper


class _Graph:
    """Nodes and initializers of the ONNX graph being built, with fresh tensor names."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, stem):
        self.count += 1
        return f"{stem}_{self.count}"

    def constant(self, stem, array):
        name = self.name(stem)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op, inputs, stem, **attrs):
        out = self.name(stem)
        self.nodes.append(self.helper.make_node(op, inputs, [out], **attrs))
        return out


def _conv(graph, x, weight, bias_name, layer):
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    inputs = [x, graph.constant("kernel", weight)] + ([bias_name] if bias_name else [])
    return graph.node(
        "Conv", inputs, "conv", kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p]
    )


def _conv_layer(graph, x, layer):
    """Conv2d, exact with or without a partial-area mask (see the module docstring)."""
    weight = layer.effective_weight().astype(np.float32)
    bias = graph.constant("bias", layer.bias.astype(np.float32))
    area = layer.area_mask
    whole = np.ones(weight.shape[:2], bool) if area is None else (area != 0).all(axis=(2, 3))
    out = _conv(graph, x, weight * whole[:, :, None, None], bias, layer)
    for i in range(layer.n_in):
        partial = ~whole[:, i] & (weight[:, i] != 0).any(axis=(1, 2))
        if not partial.any():
            continue  # every kernel of this input map sees its whole area (or is empty)
        x_i = graph.node(
            "Gather", [x, graph.constant("map", np.array([i], np.int64))], "map", axis=1
        )
        kernel_i = (weight[:, i : i + 1] * partial[:, None, None, None]).astype(np.float32)
        u_i = _conv(graph, x_i, kernel_i, None, layer)
        kept = graph.node(
            "Mul", [u_i, graph.constant("area", area[:, i].astype(np.float32)[None])], "area"
        )
        out = graph.node("Add", [out, kept], "sum")
    return out


def _layer(graph, x, layer):
    if isinstance(layer, Dense):
        weight = graph.constant("weight", layer.effective_weight().astype(np.float32))
        bias = graph.constant("bias", layer.bias.astype(np.float32))
        return graph.node("Gemm", [x, weight, bias], "dense", transB=1)
    if isinstance(layer, Conv2d):
        return _conv_layer(graph, x, layer)
    if isinstance(layer, MaxPool2d):
        k, s = layer.kernel_size, layer.stride
        return graph.node("MaxPool", [x], "pool", kernel_shape=[k, k], strides=[s, s])
    if isinstance(layer, ReLU):
        return graph.node("Relu", [x], "relu")
    if isinstance(layer, Flatten):
        return graph.node("Flatten", [x], "flatten", axis=1)
    raise InvalidArgumentError(f"no ONNX export for layer {layer!r}")


def network_to_onnx(net):
    """An ``onnx.ModelProto`` computing ``net.forward``: input "input", output "logits"."""
    onnx, helper, numpy_helper = _import_onnx()
    graph = _Graph(helper, numpy_helper)
    x = "input"
    for layer in net.layers:
        x = _layer(graph, x, layer)
    graph.nodes[-1].output[0] = "logits"
    float32 = onnx.TensorProto.FLOAT
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            net.name,
            [helper.make_tensor_value_info("input", float32, ["N", *net.input_shape])],
            [helper.make_tensor_value_info("logits", float32, ["N", net.widths()[-1]])],
            graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="nestref",
    )
    onnx.checker.check_model(model)
    return model


def export_onnx(run, path, overwrite=False, unfinished=False):
    """Write the final network of ``run`` to ``path`` as ONNX; returns the path written.

    An existing file at ``path`` is replaced only with ``overwrite``; ``unfinished`` as for
    ``load_network``.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise InvalidArgumentError(f"--onnx {path}: the file name should end in .onnx")
    if path.is_dir():
        raise OutputPathError(f"--onnx {path} is a directory: give the path of a file, e.g. "
                              f"{path / 'model.onnx'}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"--onnx {path} exists: pass --overwrite to replace it, or "
                                f"choose another name")
    check_writable_dir(path.parent, "--onnx's directory")
    model = network_to_onnx(load_network(run, unfinished))
    atomic_write_bytes(path, lambda f: f.write(model.SerializeToString()))
    return path
