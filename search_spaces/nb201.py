"""NAS-Bench-201 cell search space (registered as ``nb201``).

The network is NAS-Bench-201's (Dong & Yang, ICLR 2020) CIFAR one, as its reference code builds it (xautodl
``TinyNetwork`` with ``InferCell``), C = 16, N = 5:

- stem: 3x3 conv 3 -> 16 (padding 1, no bias), BN; no activation;
- 5 cells at 16 channels, a ResNet basic block reducing to 32, 5 cells at 32, a basic block to 64, 5 cells at 64;
- head: BN, ReLU, global average pool; classifier: linear to `num_classes` (10 for CIFAR-10).

A cell is a DAG of 4 nodes: node 0 is the cell input, node j = sum over i < j of op_ij(node i), and node 3 is the
output; its 6 edges each take one of ``none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3`` (`OP_NAMES`,
the benchmark's order), so the space holds 5^6 = 15,625 cells. One cell genotype is used by all 15 cells.
``nor_conv_kxk`` is ReLU, kxk conv (stride 1, padding k // 2, no bias), BN; ``avg_pool_3x3`` is a 3x3 stride-1
average pool with padding 1 that does not count the padding; ``skip_connect`` is the identity; ``none`` outputs
zeros (``x * 0``) and, as in the reference ``InferCell``, stays in the built network as a module. The basic block
is ``shortcut(x) + conv_b(conv_a(x))`` with conv_a = ReLU, 3x3 conv stride 2, BN; conv_b = ReLU, 3x3 conv, BN;
shortcut = 2x2 average pool stride 2, then a 1x1 conv without bias.

Decided here: ReLUs are not in place (clean ONNX export); BN is affine everywhere, as in the benchmark's trained
networks. FLOPs are multiply-accumulates of the convolutions and the classifier, which gives the benchmark's
published CIFAR-10 range: 7.78M (every edge ``none``) to 220.11M (every edge ``nor_conv_3x3``), with 0.073M to
1.531M parameters.

Cost keys (`layer_costs`), family ``nb201``: ``stem`` (act ``none``); one key per cell edge, 90 in all, in
(cell, edge) order: ``reluconv`` (kernel 1 or 3, act ``relu``), ``avgpool`` (kernel 3), ``skip`` (the identity)
and ``zero`` (act ``none``, 0 MACs; kept because devices still charge time for them); ``resblock`` for each
reduction (kernel 3, stride 2, ``skip`` = the residual add, convs conv_a, conv_b, shortcut); ``head`` (BN + ReLU +
pool, output 64x1x1, 0 MACs); ``classifier`` (act ``none``). An edge's cost never depends on the other choices,
so the space has the batch path: 90 positions (cell x edge) of 5 choices, the 6 edge choices tiled over 15 cells.

Canonical string: the benchmark's own, e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|
nor_conv_3x3~1|skip_connect~2|`` (no line break): nodes 1..3 separated by ``+``, each listing ``op~input`` for its
inputs 0..j-1 in order; edges are numbered in that order (`EDGES`) in the genotype and in `encode`.
"""
from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import PositiveInt, field_validator
from torch import nn

from search_spaces.base import PositionalLayers, SearchSpace, SpaceOptions, register_space
from search_spaces.costs import ConvSpec, CostKey, LayerCost
from search_spaces.layers import conv_bn, conv_out

NUM_NODES = 4
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))   # (node, input) in order
STAGE_CHANNELS = (16, 32, 64)
CELLS_PER_STAGE = 5
IN_CHANNELS = 3
NUM_EDGES = len(EDGES)
NUM_CELLS = CELLS_PER_STAGE * len(STAGE_CHANNELS)
NUM_POSITIONS = NUM_CELLS * NUM_EDGES
FAMILY = "nb201"


# ---- modules (plain torch) ---------------------------------------------------------------------------------------
def _relu_conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    """The benchmark's ReLUConvBN: ReLU, kxk conv (padding k // 2, no bias), BN."""
    return nn.Sequential(nn.ReLU(), *conv_bn(cin, cout, k, stride, relu=False))


class Zero(nn.Module):
    """The ``none`` op: zeros shaped like the input, computed as ``x * 0`` so the edge stays in the graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


@dataclass(frozen=True)
class EdgeOp:
    """One cell-edge operation: its benchmark name, cost-key op and kernel, and how to build it at `chs` channels."""

    name: str
    key_op: str
    kernel: int
    build: Callable[[int], nn.Module]

    @property
    def conv(self) -> bool:
        return self.key_op == "reluconv"


EDGE_OPS: tuple[EdgeOp, ...] = (
    EdgeOp("none", "zero", 1, lambda c: Zero()),
    EdgeOp("skip_connect", "skip", 1, lambda c: nn.Identity()),
    EdgeOp("nor_conv_1x1", "reluconv", 1, lambda c: _relu_conv_bn(c, c, 1)),
    EdgeOp("nor_conv_3x3", "reluconv", 3, lambda c: _relu_conv_bn(c, c, 3)),
    EdgeOp("avg_pool_3x3", "avgpool", 3, lambda c: nn.AvgPool2d(3, 1, 1, count_include_pad=False)),
)
OP_NAMES = tuple(op.name for op in EDGE_OPS)
NUM_OPS = len(EDGE_OPS)
NONE = OP_NAMES.index("none")
_EDGE_BY_KEY = {(op.key_op, op.kernel): i for i, op in enumerate(EDGE_OPS)}
# (edge index, input node) of nodes 1..3
_NODE_INPUTS = tuple(tuple((e, src) for e, (dst, src) in enumerate(EDGES) if dst == node)
                     for node in range(1, NUM_NODES))


class ResNetBasicBlock(nn.Module):
    """The reduction between stages: ``shortcut(x) + conv_b(conv_a(x))``, stride 2, `cin` -> `cout` channels."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_a = _relu_conv_bn(cin, cout, 3, 2)
        self.conv_b = _relu_conv_bn(cout, cout, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class Cell(nn.Module):
    """One NAS-Bench-201 cell: 6 edge ops, node j the sum of its inputs' edges, node 3 the output."""

    def __init__(self, ops: Sequence[int], chs: int):
        super().__init__()
        self.edges = nn.ModuleList(EDGE_OPS[op].build(chs) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for inputs in _NODE_INPUTS:
            nodes.append(functools.reduce(operator.add, (self.edges[e](nodes[src]) for e, src in inputs)))
        return nodes[-1]


def _head(chs: int) -> nn.Sequential:
    """The benchmark's last activation (BN, ReLU) and global average pool, flattened."""
    return nn.Sequential(nn.BatchNorm2d(chs), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


class NB201Network(nn.Module):
    """The NAS-Bench-201 network of one cell genotype (C = 16, N = 5).

    Args:
        ops: 6 op indices into `OP_NAMES`, in `EDGES` order.
        num_classes: classifier outputs.
    """

    def __init__(self, ops: Sequence[int], num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(IN_CHANNELS, STAGE_CHANNELS[0], 3, relu=False))
        layers: list[nn.Module] = []
        for s, chs in enumerate(STAGE_CHANNELS):
            if s:
                layers.append(ResNetBasicBlock(STAGE_CHANNELS[s - 1], chs))
            layers += [Cell(ops, chs) for _ in range(CELLS_PER_STAGE)]
        self.cells = nn.Sequential(*layers)
        self.head = _head(STAGE_CHANNELS[-1])
        self.classifier = nn.Linear(STAGE_CHANNELS[-1], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before the head: (N, 64, H/4, W/4)."""
        return self.cells(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.features(x)))


def _edge_tensors(ops: Sequence[int], eager: bool) -> list[int]:
    """Node-size tensors each edge holds itself, as `predictors.memory.layer_peak` counts them: a
    ``skip_connect`` its input; a convolution edge its input and output, and in eager mode a third (the ReLU's
    output, then BatchNorm's); a pool or ``none`` its input and output."""
    return [1 if OP_NAMES[op] == "skip_connect" else 3 if EDGE_OPS[op].conv and eager else 2 for op in ops]


def _eager_cell(ops: Sequence[int]) -> list[int]:
    """The most tensors of node size alive at once during each edge of `Cell.forward` in PyTorch eager mode (the
    addition after it included): the ``nodes`` list keeps every node made so far, the running sum of the node
    being made is alive, and `functools.reduce` holds the operands of its last addition until its next one (so
    while the next edge runs). An edge holds its input, its output and, for a convolution, the ReLU's output (then
    BatchNorm's); a ``skip_connect`` edge passes its input on as it is, so a node or operand it makes is no new
    tensor."""
    own = _edge_tensors(ops, eager=True)
    peaks, nodes, acc, stale, fresh = [], [0], None, set(), 1   # tensor ids: node 0 is the cell input
    for e, (dst, src) in enumerate(EDGES):
        alive = set(nodes) | stale | ({acc} if acc is not None else set())
        peak = len(alive) + own[e] - 1   # the edge's input is a node, counted in `alive`
        out = nodes[src] if own[e] == 1 else fresh
        fresh += 1
        if acc is None:
            acc = out
        else:   # the addition: both operands and the new sum beside the nodes
            peak = max(peak, len(set(nodes) | {acc, out}) + 1)
            stale, acc, fresh = {acc, out}, fresh, fresh + 1
        if e + 1 == NUM_EDGES or EDGES[e + 1][0] != dst:
            nodes.append(acc)
            acc, stale = None, set()
        peaks.append(peak)
    return peaks


def _fused_cell(ops: Sequence[int]) -> list[int]:
    """The most tensors of node size alive at once during each edge of a cell as onnxruntime runs its graph: a
    tensor is freed after its last reader; identical operations on one node are made once (its common-subexpression
    elimination: one ReLU of a node for all its convolution edges, one pool, one ``none``); an addition writes into
    an operand it is the last reader of; a ``skip_connect`` edge is its input. Exact for about three cells in four
    against onnxruntime's allocator (`bench/memory_energy.py`); the rest differ by a node either way (the order
    onnxruntime's optimised graph runs in)."""
    steps: list[tuple[int, list[str], str]] = []   # (edge, inputs, output) in order
    node, made, partial = {0: "n0"}, {}, {}
    for e, (dst, src) in enumerate(EDGES):
        name, x = OP_NAMES[ops[e]], node[src]
        if name == "skip_connect":
            out = x
        else:
            kind = "relu" if EDGE_OPS[ops[e]].conv else name
            if (kind, x) not in made:
                made[kind, x] = f"{kind}{e}"
                steps.append((e, [x], made[kind, x]))
            out = made[kind, x]
            if kind == "relu":
                out = f"conv{e}"
                steps.append((e, [made[kind, x]], out))
        if dst in partial:
            steps.append((e, [partial[dst], out], f"sum{e}"))
            out = f"sum{e}"
        partial[dst] = out
        node[dst] = partial[dst]
    last = {t: k for k, (_, ins, _) in enumerate(steps) for t in ins}
    last[node[NUM_NODES - 1]] = len(steps)
    alive, peaks = {"n0"}, [0] * NUM_EDGES
    for k, (e, ins, out) in enumerate(steps):
        in_place = out.startswith("sum") and any(last.get(t) == k for t in ins)
        alive = alive | ({out} if not in_place else set())
        peaks[e] = max(peaks[e], len(alive))
        alive = {t for t in alive if last.get(t, len(steps)) > k} | {out}
    return peaks


# ---- genotype and strings ----------------------------------------------------------------------------------------
class NB201Options(SpaceOptions):
    """Options of the ``nb201`` space (the network is fixed; only the input resolution may change)."""

    resolution: PositiveInt = 32

    @field_validator("resolution")
    @classmethod
    def _two_reductions(cls, v: int) -> int:
        if v % 4:   # the basic block adds a pooled shortcut (floor) to a padded stride-2 conv (ceil)
            raise ValueError(f"must be a multiple of 4 (two stride-2 reductions), got {v}")
        return v


@dataclass(frozen=True)
class NB201Arch:
    """Genotype of the ``nb201`` space: one op index (into `OP_NAMES`) per cell edge, in `EDGES` order."""

    ops: tuple[int, ...]

    def __str__(self) -> str:
        return arch_string(self.ops)


def arch_string(ops: Sequence[int]) -> str:
    """The benchmark's canonical string of a cell, e.g. ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|``."""
    nodes = ("|".join(f"{OP_NAMES[ops[e]]}~{src}" for e, src in inputs) for inputs in _NODE_INPUTS)
    return "|" + "|+|".join(nodes) + "|"


def parse_arch(string: str) -> tuple[int, ...]:
    """Op indices of a canonical cell string; `ValueError` naming the problem when it is not one."""
    def bad(why: str) -> ValueError:
        return ValueError(f"arch {string!r}: {why}")

    groups = string.split("+")
    if not all(len(g) >= 2 and g[0] == g[-1] == "|" for g in groups):
        raise bad("malformed; expected nodes '+'-separated, each '|op~input|...|', as "
                  "'|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|'")
    tokens = [g[1:-1].split("|") for g in groups]
    sizes = [len(t) for t in tokens]
    if sizes != [len(inputs) for inputs in _NODE_INPUTS]:
        raise bad(f"has {sum(sizes)} edges in {len(groups)} nodes (inputs per node {sizes}); a NAS-Bench-201 "
                  f"cell has {NUM_EDGES} edges: node 1 <- 0, node 2 <- 0,1, node 3 <- 0,1,2")
    ops = []
    for node, (edges, inputs) in enumerate(zip(tokens, _NODE_INPUTS), start=1):
        for token, (_, src) in zip(edges, inputs):
            name, sep, index = token.partition("~")
            if not sep or not name:
                raise bad(f"node {node} edge {token!r} is not 'op~input'")
            if name not in OP_NAMES:
                raise bad(f"node {node}: unknown op {name!r}; expected one of: {', '.join(OP_NAMES)}")
            if index != str(src):
                raise bad(f"node {node}: input node index {index!r} where {src} belongs (inputs 0..{node - 1} "
                          "in order)")
            ops.append(OP_NAMES.index(name))
    return tuple(ops)


@functools.cache
def _canonical_index() -> dict[str, int]:
    """Canonical string -> arch number (ops as base-5 digits, edge 0 most significant), for all 15,625 cells."""
    return {arch_string(ops): i for i, ops in enumerate(itertools.product(range(NUM_OPS), repeat=NUM_EDGES))}


_PLACE = NUM_OPS ** np.arange(NUM_EDGES - 1, -1, -1)   # base-5 place value of each edge in an arch number


# ---- the space ---------------------------------------------------------------------------------------------------
@register_space("nb201")
class NB201Space(SearchSpace):
    """NAS-Bench-201's cell space (CIFAR setting): 6 edges, 5 ops each, one cell repeated 15 times."""

    Options = NB201Options
    name = "nb201"
    options: NB201Options

    # ---- decision view: one decision of 5 ops per edge --------------------------------------------------------
    def decision_sizes(self) -> tuple[int, ...]:
        return (NUM_OPS,) * NUM_EDGES

    def to_decisions(self, arch: NB201Arch) -> tuple[int, ...]:
        return arch.ops

    def from_decisions(self, decisions: Sequence[int]) -> NB201Arch:
        return NB201Arch(tuple(int(d) for d in decisions))

    def effective_decisions(self, arch: NB201Arch) -> tuple[int, ...]:
        """The ops with every dead edge read as ``none``: an edge whose input node no live path reaches from the
        cell input, or whose node reaches the cell output by no live path, changes nothing the cell computes."""
        ops = arch.ops
        reached = [True] + [False] * (NUM_NODES - 1)
        for e, (node, src) in enumerate(EDGES):          # EDGES is in node order: inputs are settled first
            reached[node] |= ops[e] != NONE and reached[src]
        useful = [False] * (NUM_NODES - 1) + [True]
        for e, (node, src) in reversed(list(enumerate(EDGES))):
            useful[src] |= ops[e] != NONE and useful[node]
        return tuple(op if reached[src] and useful[node] else NONE for op, (node, src) in zip(ops, EDGES))

    # ---- strings and features ---------------------------------------------------------------------------------
    def to_string(self, arch: NB201Arch) -> str:
        return str(arch)

    def decode(self, string: str) -> NB201Arch:
        return NB201Arch(parse_arch(string))

    def encode(self, archs: Sequence[NB201Arch]) -> np.ndarray:
        """One-hot (edge, op) features: column ``5 * edge + op``, 6 x 5 = 30 float32 columns."""
        n = len(archs)
        ops = np.fromiter((o for a in archs for o in a.ops), dtype=np.intp, count=n * NUM_EDGES)
        return self.encode_choices(ops.reshape(n, NUM_EDGES))

    def encode_choices(self, choices: np.ndarray) -> np.ndarray:
        """`encode` of a choice matrix; only its first 6 columns (cell 0) are read, the other cells repeat them."""
        ops = np.asarray(choices)[:, :NUM_EDGES]
        n = len(ops)
        out = np.zeros((n, NUM_EDGES * NUM_OPS), dtype=np.float32)
        out[np.arange(n)[:, None], ops + np.arange(NUM_EDGES) * NUM_OPS] = 1.0
        return out

    def choice_matrix(self, strings: Sequence[str]) -> np.ndarray:
        """(n, 90) choices: each string's 6 edge ops tiled over the 15 cells. Canonical strings are looked up in
        a table of all 15,625; anything else goes through `decode`, which names the first bad string."""
        index = _canonical_index()
        number = np.fromiter((index.get(s, -1) for s in strings), dtype=np.intp, count=len(strings))
        ops = number[:, None] // _PLACE % NUM_OPS
        unknown = np.flatnonzero(number < 0)
        if len(unknown):
            ops[unknown] = [self.decode(strings[i]).ops for i in unknown]
        return np.tile(ops, NUM_CELLS)

    def positional_layers(self) -> PositionalLayers:
        return self._layers

    @functools.cached_property
    def _layers(self) -> PositionalLayers:
        """Fixed layers (stem, the two basic blocks, head, classifier) and the (cell x edge, op) table."""
        res = self.options.resolution
        chs = STAGE_CHANNELS[0]
        stem = ConvSpec(IN_CHANNELS, chs, 3, 1, res, res)
        fixed = [LayerCost.of(CostKey("stem", (IN_CHANNELS, res, res), (chs, res, res), 3, act="none",
                                      family=FAMILY), [stem], 2 * chs)]
        table, hw = [], res
        for s, chs in enumerate(STAGE_CHANNELS):
            if s:
                fixed.append(_resblock_cost(STAGE_CHANNELS[s - 1], chs, hw))
                hw = fixed[-1].key.out_shape[1]
            table += [tuple(_edge_cost(op, chs, hw) for op in range(NUM_OPS))] * (CELLS_PER_STAGE * NUM_EDGES)
        fixed.append(LayerCost.of(CostKey("head", (chs, hw, hw), (chs, 1, 1), act="relu", family=FAMILY), [],
                                  2 * chs))
        fc = ConvSpec(chs, self.num_classes, 1, 1, 1, 1, bias=True)
        fixed.append(LayerCost.of(CostKey("classifier", (chs, 1, 1), (self.num_classes, 1, 1), act="none",
                                          family=FAMILY), [fc]))
        return PositionalLayers(tuple(fixed), tuple(table))

    # ---- compression units (search_spaces.policy) -------------------------------------------------------------
    def compression_units(self) -> tuple[str, ...]:
        """The stem, each stage (``s1`` and ``s2`` opened by their basic block) and the head with the classifier.
        Per stage rather than per cell: one cell genotype fills all 15 cells, and a stage's 5 cells share its
        shapes, so they gain or lose alike from a precision."""
        return ("stem", *(f"s{s}" for s in range(len(STAGE_CHANNELS))), "head")

    def unit_of_layers(self, arch: NB201Arch) -> list[int]:
        """In `layer_costs` order: the stem, each stage's basic block and 30 edges, then head and classifier."""
        per_stage = CELLS_PER_STAGE * NUM_EDGES
        stages = [1 + s for s in range(len(STAGE_CHANNELS)) for _ in range(per_stage + bool(s))]
        return [0, *stages, len(STAGE_CHANNELS) + 1, len(STAGE_CHANNELS) + 1]

    def unit_modules(self, arch: NB201Arch) -> list[tuple[str, ...]]:
        """Module names of `NB201Network`: ``cells.<i>`` numbers the cells and the two basic blocks in order."""
        stages, start = [], 0
        for s in range(len(STAGE_CHANNELS)):
            size = CELLS_PER_STAGE + bool(s)
            stages.append(tuple(f"cells.{i}" for i in range(start, start + size)))
            start += size
        return [("stem",), *stages, ("head", "classifier")]

    # ---- cost -------------------------------------------------------------------------------------------------
    def layer_costs(self, arch: NB201Arch) -> list[LayerCost]:
        """Stem, then per stage its basic block (stages 2 and 3) and 5 cells x 6 edges, then head and classifier."""
        stem, *reductions, head, fc = self._layers.fixed
        per_stage = CELLS_PER_STAGE * NUM_EDGES
        out = [stem]
        for s in range(len(STAGE_CHANNELS)):
            if s:
                out.append(reductions[s - 1])
            rows = self._layers.table[s * per_stage:(s + 1) * per_stage]
            out += [row[op] for row, op in zip(rows, itertools.cycle(arch.ops))]
        return out + [head, fc]

    def held_values(self, arch: NB201Arch, engine: str, layers: Sequence[LayerCost]) -> list[int]:
        """What runs beside each edge of a cell (see `SearchSpace.held_values`), in tensors of the cell's node
        size beyond the edge's own peak as `predictors.memory.layer_peak` counts it (its input and output; in
        eager mode a convolution edge's third tensor too), from a walk of the cell's tensors (`_eager_cell`,
        `_fused_cell`); in eager mode also, outside the first cell, the stem's output, which the caller of the cells
        still holds."""
        eager = engine == "eager"
        peaks = _eager_cell(arch.ops) if eager else _fused_cell(arch.ops)
        per_cell = [max(0, p - o) for p, o in zip(peaks, _edge_tensors(arch.ops, eager))]
        stem = int(np.prod(layers[0].key.out_shape)) if eager else 0
        held, edge = [0], 0
        for lc in layers[1:-2]:
            if lc.key.op == "resblock":
                held.append(stem)
                continue
            side = lc.key.in_shape[0] * lc.key.in_shape[1] * lc.key.in_shape[2]
            held.append(per_cell[edge % NUM_EDGES] * side + (stem if edge >= NUM_EDGES else 0))
            edge += 1
        return held + [0, 0]

    def runtime_graph(self, arch: NB201Arch, graph, x, layers: Sequence[LayerCost]) -> bool:
        """The graph onnxruntime runs (see `SearchSpace.runtime_graph`): the stem, each basic block (its
        shortcut's pool, conv_a, conv_b, the shortcut's conv taking the sum) and each cell as `Cell.forward` makes
        it (a node the running sum of its edges; a convolution edge ReLU, conv; a pool; ``none`` a product with 0;
        ``skip_connect`` its input), then the head."""
        def at(index: int):
            graph.layer = index
            return layers[index]

        x = graph.convolve(x, at(0).convs[0], act=False)
        cell, nodes = 0, [x]   # the layer before the cell's first edge; the cell's nodes so far
        for n in range(1, len(layers) - 2):
            lc = at(n)
            if lc.key.op == "resblock":
                a, b, short = lc.convs
                x = nodes[0]
                pooled = graph.pool(x, (short.hw_in, short.hw_in), "AveragePool")
                x = graph.add(graph.convolve(pooled, short, act=False),
                              graph.convolve(graph.convolve(graph.elementwise(x, "Relu"), a), b, act=False))
                cell, nodes = n, [x]
                continue
            e = n - cell - 1
            dst, src = EDGES[e]
            name, t = OP_NAMES[arch.ops[e]], nodes[src]
            out = (t if name == "skip_connect" else graph.elementwise(t, "Zero") if name == "none" else
                   graph.pool(t, lc.key.out_shape[1:], "AveragePool") if name == "avg_pool_3x3" else
                   graph.convolve(graph.elementwise(t, "Relu"), lc.convs[0], act=False))
            if len(nodes) == dst:   # the node's first edge
                nodes.append(out)
            else:
                nodes[dst] = graph.add(nodes[dst], out)
            if e == NUM_EDGES - 1:
                cell, nodes = n, [nodes[-1]]
        x = nodes[0]
        at(len(layers) - 2)
        x = graph.pool(graph.elementwise(graph.elementwise(x, "BatchNormalization"), "Relu"), (1, 1),
                       "GlobalAveragePool")
        at(len(layers) - 1)
        graph.classify(x, self.num_classes)
        return True

    def saved_twice(self, arch: NB201Arch) -> int:
        """An ``avg_pool_3x3`` edge keeps its input node for the backward pass, and the walk counts it per edge:
        the nodes that more than one pooling edge reads (a ``skip_connect`` node being the node it passes on) are
        counted once too many per extra edge, in every cell (see `SearchSpace.saved_twice`)."""
        node_of = list(range(NUM_NODES))   # the tensor each node is: a node made by one skip edge is its input
        for e, (dst, src) in enumerate(EDGES):
            if sum(d == dst for d, _ in EDGES) == 1 and OP_NAMES[arch.ops[e]] == "skip_connect":
                node_of[dst] = node_of[src]
        readers = [node_of[src] for e, (_, src) in enumerate(EDGES) if OP_NAMES[arch.ops[e]] == "avg_pool_3x3"]
        extra = len(readers) - len(set(readers))
        res = self.options.resolution
        return sum(extra * CELLS_PER_STAGE * chs * (res >> s) ** 2 for s, chs in enumerate(STAGE_CHANNELS))

    def smallest(self) -> NB201Arch:
        """Every edge ``none``: the other ops cost at least as many MACs and params (only convs have any)."""
        return NB201Arch((NONE,) * NUM_EDGES)

    def enumerate_layers(self, max_samples: int = 0, patience: int = 0) -> tuple[list[LayerCost], bool]:
        """Exact: the fixed layers plus every op at every position."""
        pos = self._layers
        layers = {str(lc.key): lc for lc in (*pos.fixed, *(lc for row in pos.table for lc in row))}
        return list(layers.values()), True

    # ---- build ------------------------------------------------------------------------------------------------
    def build(self, arch: NB201Arch) -> NB201Network:
        return NB201Network(arch.ops, self.num_classes)

    def build_layer(self, key: CostKey) -> nn.Module:
        """One layer alone, from its cost key (input (1, *key.in_shape))."""
        cin, cout = key.in_shape[0], key.out_shape[0]
        edge = _EDGE_BY_KEY.get((key.op, key.kernel))
        if edge is not None:
            return EDGE_OPS[edge].build(cin)
        if key.op == "stem":
            return nn.Sequential(*conv_bn(cin, cout, key.kernel, relu=False))
        if key.op == "resblock":
            return ResNetBasicBlock(cin, cout)
        if key.op == "head":
            return _head(cin)
        if key.op == "classifier":
            return nn.Sequential(nn.Flatten(1), nn.Linear(cin, cout))
        raise ValueError(f"cannot build a layer for cost key op {key.op!r}")

    def input_shape(self, arch: NB201Arch) -> tuple[int, int, int, int]:
        res = self.options.resolution
        return (1, IN_CHANNELS, res, res)


def _edge_cost(op: int, chs: int, hw: int) -> LayerCost:
    """Cost of edge op `op` on a (chs, hw, hw) map (the shape is unchanged)."""
    spec, shape = EDGE_OPS[op], (chs, hw, hw)
    key = CostKey(spec.key_op, shape, shape, spec.kernel, act="relu" if spec.conv else "none", family=FAMILY)
    if not spec.conv:   # no convolution, but still a key: devices charge time for pools, copies and zeros
        return LayerCost.of(key, [])
    return LayerCost.of(key, [ConvSpec(chs, chs, spec.kernel, 1, hw, hw)], 2 * chs)


def _resblock_cost(cin: int, cout: int, hw: int) -> LayerCost:
    """Cost of the stride-2 basic block on a (cin, hw, hw) map: conv_a, conv_b, the 1x1 shortcut conv."""
    ho = conv_out(hw, 3, 2)
    convs = [ConvSpec(cin, cout, 3, 2, hw, ho), ConvSpec(cout, cout, 3, 1, ho, ho), ConvSpec(cin, cout, 1, 1, ho, ho)]
    key = CostKey("resblock", (cin, hw, hw), (cout, ho, ho), 3, 2, act="relu", skip=True, family=FAMILY)
    return LayerCost.of(key, convs, 2 * (cout + cout))
