"""Darknet YOLO models in PyTorch: the same cfg + weights as OpenCV's DNN, on CUDA as well as the CPU.

OpenCV's DNN module runs Darknet models on the CPU only here, and OpenCV 5 dropped the
Darknet reader. This module reads the Darknet `.cfg` and `.weights` files itself and builds
the network generically from the cfg, so any YOLOv3, YOLOv3-tiny or YOLOv4-tiny style cfg
made of the supported sections runs through the same code:

- `[net]`: `width`, `height`, `channels` (everything else there is training-only);
- `[convolutional]` with `batch_normalize`, `filters`, `size`, `stride`, `pad`/`padding`,
  `groups`, `activation` (`leaky`, `linear`, `logistic`, `mish`, `swish`);
- `[maxpool]` with Darknet's padding (`padding`, default `size - 1`, split floor/ceil, so
  `size=2 stride=1` pads only right and bottom and keeps the size);
- `[route]` with one or more `layers` (relative or absolute), and `groups`/`group_id`;
- `[upsample]` (nearest), `[shortcut]` (`from`, `activation`);
- `[yolo]` with `mask`, `anchors`, `classes`, `num`, `scale_x_y`, and OpenCV's `thresh` and
  `nms_threshold` (training options there are accepted and unused).

Options whose default differs between Darknet and OpenCV (a convolution's `activation`,
the `size`/`stride` of `[maxpool]`, the `stride` of `[upsample]`) must be stated in the cfg.
Any other section, or an option that would change inference (`dilation`, `new_coords`,
`dontload`, ...), is a `DarknetCfgError` naming the file, line and section: a model that
silently computes something else is worse than one that refuses to load.

The `[yolo]` layers give the rows OpenCV's region layer gives, not Darknet's own: per
cell and anchor (row order y, x, anchor), `[cx, cy, w, h]` normalised to the network input,
the objectness, then per class objectness × class probability, zeroed where it is not above
the layer's `thresh` (default 0.2, as OpenCV reads it). Where a `[yolo]` section sets
`nms_threshold` (OpenCV's default is 0: none), OpenCV's per-layer, per-class non-maximum
suppression follows and zeroes the class scores of suppressed rows; `region_nms` does the
same. Batch normalisation is folded into the convolutions, with OpenCV's
`sqrt(var + 1e-6)`.

torch is imported here at module level: import this module only when the torch runtime is
chosen (`detectors.darknet` does so lazily).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.base import RgbImage, available_cores
from detectors.darknet import region_nms
from detectors.weights import WeightsError
from detectors.yolo import resolve_device

BN_EPSILON = 1e-6
"""Batch-norm epsilon, inside the square root as OpenCV has it (Darknet adds it outside)."""
LEAKY_SLOPE = 0.1


class DarknetCfgError(ValueError):
    """A Darknet cfg this module cannot build exactly: says where (file, line, section) and why."""


class DarknetWeightsError(WeightsError):
    """A Darknet `.weights` file that does not fit its cfg (truncated, too long, unknown format)."""


# --------------------------------------------------------------------------- cfg


@dataclass
class CfgSection:
    """One `[section]` of a cfg: its options as written, and which of them the builder used."""

    kind: str
    line: int
    source: str
    index: int
    """Darknet's layer index (the count of sections before it, `[net]` excluded); -1 for `[net]`."""
    options: dict[str, str] = field(default_factory=dict)
    option_lines: dict[str, int] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)

    def where(self, key: str | None = None) -> str:
        line = self.option_lines.get(key, self.line) if key else self.line
        layer = f" (layer {self.index})" if self.index >= 0 else ""
        return f"{self.source}:{line}: [{self.kind}]{layer}"

    def error(self, message: str, key: str | None = None) -> DarknetCfgError:
        return DarknetCfgError(f"{self.where(key)}: {message}")

    def has(self, key: str) -> bool:
        return key in self.options

    def text(self, key: str, default: str | None = None, disputed: bool = False) -> str:
        """An option's value; without a default, a missing option is an error.

        `disputed`: Darknet and OpenCV default this option differently, so the cfg must say.
        """
        self.used.add(key)
        if key in self.options:
            return self.options[key]
        if default is None:
            why = " (Darknet and OpenCV default it differently; state it)" if disputed else ""
            raise self.error(f"missing option '{key}'{why}")
        return default

    def integer(self, key: str, default: int | None = None, disputed: bool = False) -> int:
        value = self.text(key, None if default is None else str(default), disputed)
        try:
            return int(value)
        except ValueError:
            raise self.error(f"option '{key}' must be an integer, got {value!r}", key) from None

    def number(self, key: str, default: float | None = None) -> float:
        value = self.text(key, None if default is None else repr(default))
        try:
            return float(value)
        except ValueError:
            raise self.error(f"option '{key}' must be a number, got {value!r}", key) from None

    def integers(self, key: str) -> list[int]:
        value = self.text(key)
        try:
            return [int(part) for part in value.split(",") if part]
        except ValueError:
            raise self.error(f"option '{key}' must be integers separated by commas, got {value!r}", key) from None

    def numbers(self, key: str) -> list[float]:
        value = self.text(key)
        try:
            return [float(part) for part in value.split(",") if part]
        except ValueError:
            raise self.error(f"option '{key}' must be numbers separated by commas, got {value!r}", key) from None

    def choice(self, key: str, allowed: Iterable[str], default: str | None = None) -> str:
        """An option accepted only with the values the builder implements (without a default: stated in the cfg)."""
        value = self.text(key, default, disputed=default is None)
        if value not in allowed:
            raise self.error(f"unsupported {key}={value} (supported: {', '.join(allowed)})", key)
        return value

    def check_used(self, ignored: frozenset[str] = frozenset()) -> None:
        """Every option was either used or is known not to change inference."""
        for key in self.options:
            if key not in self.used and key not in ignored:
                raise self.error(f"unsupported option '{key}'", key)


def parse_cfg(text: str, source: str = "<cfg>") -> list[CfgSection]:
    """The sections of a Darknet cfg, `[net]` first; whitespace and `#`/`;` comment lines ignored."""
    sections: list[CfgSection] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split())  # Darknet drops every blank, also inside a line
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise DarknetCfgError(f"{source}:{number}: malformed section header {raw.strip()!r}")
            kind = line[1:-1].lower()
            index = -1 if not sections else len(sections) - 1
            if not sections and kind not in ("net", "network"):
                raise DarknetCfgError(f"{source}:{number}: the first section must be [net], got [{kind}]")
            if sections and kind in ("net", "network"):
                raise DarknetCfgError(f"{source}:{number}: a second [{kind}] section")
            sections.append(CfgSection("net" if kind == "network" else kind, number, source, index))
            continue
        if not sections:
            raise DarknetCfgError(f"{source}:{number}: option outside any section: {raw.strip()!r}")
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise DarknetCfgError(f"{source}:{number}: expected 'key=value', got {raw.strip()!r}")
        section = sections[-1]
        if key in section.options:
            raise section.error(f"option '{key}' given twice (lines {section.option_lines[key]} and {number})", key)
        section.options[key] = value
        section.option_lines[key] = number
    if not sections:
        raise DarknetCfgError(f"{source}: no sections")
    if len(sections) == 1:
        raise DarknetCfgError(f"{source}: no layers after [net]")
    return sections


# --------------------------------------------------------------------------- layers

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {  # in place: each applies to a fresh tensor
    "linear": lambda x: x,
    "leaky": lambda x: F.leaky_relu(x, LEAKY_SLOPE, inplace=True),
    "logistic": lambda x: x.sigmoid_(),
    "mish": lambda x: F.mish(x, inplace=True),
    "swish": lambda x: F.silu(x, inplace=True),
}

# Options that only matter for training (or for Darknet's own detection output, which the
# OpenCV-compatible [yolo] rows do not use); they are accepted and have no effect here.
_YOLO_TRAINING = frozenset(
    {
        "jitter",
        "ignore_thresh",
        "truth_thresh",
        "random",
        "resize",
        "iou_normalizer",
        "cls_normalizer",
        "obj_normalizer",
        "delta_normalizer",
        "uc_normalizer",
        "iou_loss",
        "iou_thresh",
        "iou_thresh_kind",
        "nms_kind",
        "beta_nms",
        "max_delta",
        "max",
        "counters_per_class",
        "label_smooth_eps",
        "focal_loss",
        "objectness_smooth",
        "beta1",
        "track_history_size",
        "sim_thresh",
        "dets_for_track",
        "dets_for_show",
        "embedding_layer",
        "map",
        "rescore",
        "show_details",
    }
)
_LAYER_TRAINING = frozenset({"stopbackward", "stop_backward", "train", "learning_rate_scale"})


class _Conv(nn.Module):
    """Convolution with batch norm folded in (so always with a bias), then the activation."""

    def __init__(
        self,
        channels: int,
        filters: int,
        size: int,
        stride: int,
        padding: int,
        groups: int,
        batch_normalize: bool,
        activation: str,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, filters, size, stride, padding, groups=groups, bias=True)
        self.batch_normalize = batch_normalize
        self.activation = activation
        self._act = _ACTIVATIONS[activation]

    def weight_count(self) -> int:
        """Floats of this layer in a `.weights` file: bias (+ scale, mean, variance) and kernel."""
        filters = self.conv.out_channels
        return filters * (4 if self.batch_normalize else 1) + self.conv.weight.numel()

    def load(self, values: npt.NDArray[np.float32]) -> None:
        filters = self.conv.out_channels
        bias = values[:filters].astype(np.float64)
        offset = filters
        kernel = values[offset + (3 * filters if self.batch_normalize else 0) :].astype(np.float64)
        kernel = kernel.reshape(tuple(self.conv.weight.shape))
        if self.batch_normalize:
            scale, mean, variance = (
                values[offset + i * filters : offset + (i + 1) * filters].astype(np.float64) for i in range(3)
            )
            factor = scale / np.sqrt(variance + BN_EPSILON)
            kernel = kernel * factor[:, None, None, None]
            bias = bias - mean * factor
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(kernel.astype(np.float32)))
            assert self.conv.bias is not None  # built with bias=True
            self.conv.bias.copy_(torch.from_numpy(bias.astype(np.float32)))

    def forward(self, x: Tensor) -> Tensor:
        return self._act(self.conv(x))


class _MaxPool(nn.Module):
    """Darknet's max pool: `padding` (default size - 1) split floor/ceil between left/top and right/bottom.

    The output is `(side + padding - size) // stride + 1` a side, as in Darknet; padding is
    skipped where no window would reach it (stride 2 on an even side).
    """

    def __init__(self, size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.size, self.stride, self.padding = size, stride, padding
        self.before = padding // 2

    def _needs_padding(self, side: int) -> bool:
        darknet = (side + self.padding - self.size) // self.stride + 1
        return self.before > 0 or side < self.size or (side - self.size) // self.stride + 1 != darknet

    def forward(self, x: Tensor) -> Tensor:
        if self._needs_padding(x.shape[2]) or self._needs_padding(x.shape[3]):
            after = self.padding - self.before
            x = F.pad(x, (self.before, after, self.before, after), value=-math.inf)
        return F.max_pool2d(x, self.size, self.stride)


class _Upsample(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.stride, mode="nearest")


class _Route(nn.Module):
    """Concatenates earlier outputs along channels; with `groups`, only group `group_id` of each."""

    def __init__(self, groups: int, group_id: int) -> None:
        super().__init__()
        self.groups, self.group_id = groups, group_id

    def forward(self, inputs: list[Tensor]) -> Tensor:
        if self.groups > 1:
            inputs = [x.chunk(self.groups, dim=1)[self.group_id] for x in inputs]
        return inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=1)


class _Shortcut(nn.Module):
    def __init__(self, activation: str) -> None:
        super().__init__()
        self._act = _ACTIVATIONS[activation]

    def forward(self, inputs: list[Tensor]) -> Tensor:
        return self._act(inputs[0] + inputs[1])


class YoloLayer(nn.Module):
    """A `[yolo]` head decoded as OpenCV's region layer does (before its per-class NMS, see `region_nms`)."""

    anchors: Tensor

    def __init__(
        self,
        anchors: Sequence[tuple[float, float]],
        classes: int,
        scale_x_y: float,
        thresh: float,
        nms_threshold: float,
    ) -> None:
        super().__init__()
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32), persistent=False)
        self.classes = classes
        self.scale_x_y = scale_x_y
        self.thresh = thresh
        self.nms_threshold = nms_threshold

    def forward(self, x: Tensor, input_size: tuple[int, int]) -> Tensor:
        """(N, A·(5+C), H, W) → (N, H·W·A, 5+C), rows in OpenCV's order (y, x, anchor)."""
        batch, _, rows, cols = x.shape
        count = len(self.anchors)
        t = x.permute(0, 2, 3, 1).reshape(batch, rows, cols, count, 5 + self.classes).float()
        xy = torch.sigmoid(t[..., 0:2])
        if self.scale_x_y != 1:
            xy = (xy - 0.5) * self.scale_x_y + 0.5
        grid_y, grid_x = torch.meshgrid(
            torch.arange(rows, device=x.device), torch.arange(cols, device=x.device), indexing="ij"
        )
        centre_x = (grid_x[..., None] + xy[..., 0]) / cols
        centre_y = (grid_y[..., None] + xy[..., 1]) / rows
        width = torch.exp(t[..., 2]) * self.anchors[:, 0].float() / input_size[1]
        height = torch.exp(t[..., 3]) * self.anchors[:, 1].float() / input_size[0]
        objectness = torch.sigmoid(t[..., 4])
        scores = objectness[..., None] * torch.sigmoid(t[..., 5:])
        scores.masked_fill_(~(scores > self.thresh), 0.0)  # OpenCV: prob > thresh ? prob : 0
        out = torch.cat([torch.stack([centre_x, centre_y, width, height, objectness], dim=-1), scores], dim=-1)
        return out.reshape(batch, rows * cols * count, 5 + self.classes)


@dataclass(frozen=True)
class _Node:
    """One Darknet layer in the graph: its module and the earlier layers it reads."""

    kind: str
    sources: tuple[int, ...]


class DarknetNetwork(nn.Module):
    """A Darknet cfg as a PyTorch module; `forward` gives one tensor of region rows per `[yolo]` layer."""

    def __init__(self, sections: Sequence[CfgSection]) -> None:
        super().__init__()
        net, layers = sections[0], sections[1:]
        self.width, self.height = net.integer("width", 416), net.integer("height", 416)
        self.channels = net.integer("channels", 3)
        self.layers = nn.ModuleList()
        self._nodes: list[_Node] = []
        channels: list[int] = []
        current = self.channels
        for section in layers:
            module, current, sources = self._build(section, current, channels)
            self.layers.append(module)
            self._nodes.append(_Node(section.kind, sources))
            channels.append(current)
        self._keep = {source for node in self._nodes for source in node.sources}
        if not any(node.kind == "yolo" for node in self._nodes):
            raise DarknetCfgError(f"{net.source}: no [yolo] layer, nothing to detect with")

    @classmethod
    def from_cfg(cls, path: Path) -> DarknetNetwork:
        return cls(parse_cfg(path.read_text(), str(path)))

    @property
    def yolo_layers(self) -> list[YoloLayer]:
        return [layer for layer in self.layers if isinstance(layer, YoloLayer)]

    @property
    def convolutions(self) -> list[_Conv]:
        return [layer for layer in self.layers if isinstance(layer, _Conv)]

    def _reference(self, section: CfgSection, key: str, value: int, built: int) -> int:
        """A route/shortcut index (negative: relative to this layer) as an absolute layer index."""
        index = value if value >= 0 else section.index + value
        if not 0 <= index < built:
            raise section.error(f"{key} refers to layer {index}, not an earlier layer", key)
        if self._nodes[index].kind == "yolo":
            raise section.error(f"{key} refers to [yolo] layer {index}, whose output is not a feature map", key)
        return index

    def _build(self, section: CfgSection, channels: int, earlier: list[int]) -> tuple[nn.Module, int, tuple[int, ...]]:
        """The module of one section, its output channels, and the layers it reads."""
        kind = section.kind
        if section.index > 0 and self._nodes[-1].kind == "yolo" and kind != "route":
            raise section.error("only a [route] may follow a [yolo] layer (its output is not a feature map)")
        previous = (section.index - 1,) if section.index > 0 else ()
        if kind == "convolutional":
            return self._convolutional(section, channels), section.integer("filters"), previous
        if kind == "maxpool":
            return self._maxpool(section), channels, previous
        if kind == "upsample":
            return self._upsample(section), channels, previous
        if kind == "route":
            return self._route(section, earlier)
        if kind == "shortcut":
            return self._shortcut(section, channels, earlier)
        if kind == "yolo":
            return self._yolo(section, channels), channels, previous
        raise section.error(
            f"unsupported layer type [{kind}] (supported: convolutional, maxpool, route, upsample, shortcut, yolo)"
        )

    @staticmethod
    def _upsample(section: CfgSection) -> _Upsample:
        stride = section.integer("stride", disputed=True)
        if stride < 1:
            raise section.error(f"unsupported stride={stride} (only upsampling)", "stride")
        if section.number("scale", 1.0) != 1.0:
            raise section.error(f"unsupported scale={section.options['scale']}", "scale")
        section.check_used(_LAYER_TRAINING)
        return _Upsample(stride)

    def _route(self, section: CfgSection, earlier: list[int]) -> tuple[_Route, int, tuple[int, ...]]:
        sources = tuple(self._reference(section, "layers", value, len(earlier)) for value in section.integers("layers"))
        if not sources:
            raise section.error("empty 'layers'", "layers")
        groups, group_id = section.integer("groups", 1), section.integer("group_id", 0)
        if groups < 1 or not 0 <= group_id < groups:
            raise section.error(f"invalid groups={groups} group_id={group_id}")
        for source in sources:
            if earlier[source] % groups:
                raise section.error(
                    f"layer {source} has {earlier[source]} channels, not divisible into {groups} groups", "groups"
                )
        section.check_used(_LAYER_TRAINING)
        return _Route(groups, group_id), sum(earlier[source] // groups for source in sources), sources

    @staticmethod
    def _refuse(section: CfgSection, options: dict[str, str]) -> None:
        """Options that change what a layer computes, accepted only at their neutral value."""
        for key, neutral in options.items():
            if section.has(key) and section.text(key) != neutral:
                raise section.error(f"unsupported option {key}={section.options[key]}", key)

    def _convolutional(self, section: CfgSection, channels: int) -> _Conv:
        size, filters = section.integer("size"), section.integer("filters")
        stride, groups = section.integer("stride", 1), section.integer("groups", 1)
        pad, padding = section.integer("pad", 0), section.integer("padding", 0)
        self._refuse(
            section,
            {
                "stride_x": str(stride),
                "stride_y": str(stride),
                "dilation": "1",
                "flipped": "0",
                "binary": "0",
                "xnor": "0",
                "antialiasing": "0",
                "dontload": "0",
                "dontloadscales": "0",
                "share_index": "",
                "deform": "0",
                "coordconv": "0",
            },
        )
        if size < 1 or filters < 1 or stride < 1 or groups < 1 or channels % groups or filters % groups:
            raise section.error(
                f"invalid size={size} filters={filters} stride={stride} groups={groups} for {channels} input channels"
            )
        activation = section.choice("activation", _ACTIVATIONS)
        conv = _Conv(
            channels,
            filters,
            size,
            stride,
            size // 2 if pad else padding,
            groups,
            bool(section.integer("batch_normalize", 0)),
            activation,
        )
        section.check_used(_LAYER_TRAINING)
        return conv

    def _maxpool(self, section: CfgSection) -> _MaxPool:
        size, stride = section.integer("size", disputed=True), section.integer("stride", disputed=True)
        padding = section.integer("padding", size - 1)
        self._refuse(
            section,
            {
                "stride_x": str(stride),
                "stride_y": str(stride),
                "maxpool_depth": "0",
                "antialiasing": "0",
                "out_channels": "1",
            },
        )
        if size < 1 or stride < 1 or padding < 0:
            raise section.error(f"invalid size={size} stride={stride} padding={padding}")
        section.check_used(_LAYER_TRAINING)
        return _MaxPool(size, stride, padding)

    def _shortcut(
        self, section: CfgSection, channels: int, earlier: list[int]
    ) -> tuple[nn.Module, int, tuple[int, ...]]:
        values = section.integers("from")
        if len(values) != 1:
            raise section.error("only a single 'from' layer is supported", "from")
        source = self._reference(section, "from", values[0], len(earlier))
        self._refuse(section, {"weights_type": "none", "weights_normalization": "none", "alpha": "1", "beta": "0"})
        if earlier[source] != channels:
            raise section.error(
                f"adds layer {source} ({earlier[source]} channels) to {channels} channels; "
                "only equal shapes are supported",
                "from",
            )
        activation = section.choice("activation", _ACTIVATIONS, "linear")
        section.check_used(_LAYER_TRAINING)
        return _Shortcut(activation), channels, (section.index - 1, source)

    def _yolo(self, section: CfgSection, channels: int) -> YoloLayer:
        classes, total = section.integer("classes"), section.integer("num")
        anchors, mask = section.numbers("anchors"), section.integers("mask")
        if classes < 1 or total < 1 or len(anchors) != 2 * total:
            raise section.error(
                f"classes={classes}, num={total} and {len(anchors)} anchor values (expected {2 * total}) do not fit",
                "anchors",
            )
        if not mask or any(not 0 <= m < total for m in mask):
            raise section.error(f"mask {mask} refers to anchors outside 0..{total - 1}", "mask")
        if channels != len(mask) * (5 + classes):
            raise section.error(
                f"the layer before has {channels} channels; {len(mask)} anchors × "
                f"(5 + {classes} classes) = {len(mask) * (5 + classes)} expected"
            )
        self._refuse(section, {"new_coords": "0"})
        layer = YoloLayer(
            [(anchors[2 * m], anchors[2 * m + 1]) for m in mask],
            classes,
            section.number("scale_x_y", 1.0),
            section.number("thresh", 0.2),
            section.number("nms_threshold", 0.0),
        )
        section.check_used(_YOLO_TRAINING | _LAYER_TRAINING)
        return layer

    def load_weights(self, path: Path) -> None:
        """Darknet `.weights`: a header (major, minor, revision, images seen), then per convolution in
        cfg order: bias, and with batch norm scale, mean and variance, then the kernel (float32)."""
        data = path.read_bytes()
        if len(data) < 16:
            raise DarknetWeightsError(f"{path}: {len(data)} bytes, too short for a Darknet weights header")
        major, minor, _revision = np.frombuffer(data, dtype="<i4", count=3)
        if major > 1000 or minor > 1000:
            raise DarknetWeightsError(f"{path}: transposed weights (version {major}.{minor}) are not supported")
        header = 20 if major * 10 + minor >= 2 else 16
        body = len(data) - header
        expected = sum(conv.weight_count() for conv in self.convolutions)
        present = max(body, 0) // 4
        if body < 0 or body % 4 or present != expected:
            problem = "truncated" if present < expected else "longer than the cfg needs"
            raise DarknetWeightsError(
                f"{path}: {problem}: the cfg's {len(self.convolutions)} convolutions need {expected} floats, "
                f"the file has {present}"
                + (f" and {body % 4} stray bytes" if body > 0 and body % 4 else "")
                + f" after its {header}-byte header (version {major}.{minor}); is it the weights of this cfg?"
            )
        values = np.frombuffer(data, dtype="<f4", offset=header)
        offset = 0
        for conv in self.convolutions:
            count = conv.weight_count()
            conv.load(values[offset : offset + count])
            offset += count

    def forward(self, x: Tensor) -> list[Tensor]:
        size = (int(x.shape[2]), int(x.shape[3]))
        kept: dict[int, Tensor] = {}
        outputs: list[Tensor] = []
        for index, (layer, node) in enumerate(zip(self.layers, self._nodes, strict=True)):
            if isinstance(layer, YoloLayer):
                outputs.append(layer(x, size))
            elif isinstance(layer, _Route | _Shortcut):
                x = layer([x if source == index - 1 else kept[source] for source in node.sources])
            else:
                x = layer(x)
            if index in self._keep:
                kept[index] = x
        return outputs


class TorchDarknet:
    """The Darknet runtime on PyTorch: letterboxed RGB images in, OpenCV-compatible region rows out.

    `device`: `auto` (CUDA when torch sees it, else the CPU), `cpu`, `cuda`, `cuda:N`.
    `half`: float16 on CUDA (ignored when `auto` picks the CPU; an error with `cpu`).
    `cpu_threads`: PyTorch's threads on the CPU (process-wide; set again before each batch,
    as another model may have changed it).
    """

    def __init__(
        self, cfg: Path, weights: Path, device: str = "auto", half: bool = False, cpu_threads: int | None = None
    ) -> None:
        self.device = resolve_device(device)
        if half and not self.device.startswith("cuda") and device != "auto":
            raise ValueError(f"half precision needs CUDA, not device {device!r}")
        self.half = half and self.device.startswith("cuda")
        self.cpu_threads = cpu_threads or available_cores()
        network = DarknetNetwork.from_cfg(cfg)
        network.load_weights(weights)
        network.eval().requires_grad_(False)
        self._dtype = torch.float16 if self.half else torch.float32
        # NHWC: the layout oneDNN's and cuDNN's fastest convolutions take (and the frames' own)
        self.network = network.to(self.device, self._dtype).to(memory_format=torch.channels_last)

    def raw(self, images: Sequence[RgbImage]) -> list[npt.NDArray[np.float32]]:
        """Per `[yolo]` layer, (N, rows, 5+C) after the layer's thresholding and NMS, as OpenCV outputs it."""
        if self.device == "cpu" and torch.get_num_threads() != self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        batch = torch.from_numpy(np.stack(images)).to(self.device)
        with torch.inference_mode():
            x = (batch.permute(0, 3, 1, 2).float() * (1 / 255.0)).to(self._dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            outputs = [out.cpu().numpy() for out in self.network(x)]
        for out, layer in zip(outputs, self.network.yolo_layers, strict=True):
            for rows in out:
                region_nms(rows, layer.thresh, layer.nms_threshold)
        return outputs
