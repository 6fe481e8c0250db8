"""Inference memory as onnxruntime's CPU provider holds it, predicted from layer shapes before anything is built
(issue 22): the walk behind ``engine="onnxruntime"`` of `predictors.memory.inference_memory`.

The other walks (`predictors.memory.layer_peak`) take the most tensors alive inside one layer at a time.
onnxruntime departs from that in three ways, which put the fused walk 15-40 % off on FBNet, MuffNet and
NAS-Bench-201 networks and up to 18 % on MobileNet ones:

1. **It runs another graph** (`OrtGraph`). Its optimizer folds BatchNorm, fuses a ReLU into the convolution that
   made its input for it alone (`fuse_activations`) and makes identical nodes once (a cell's ReLUs and pools of
   one node, a sum two joins share). On x86 it then moves convolutions into a blocked layout (NCHWc: channels in
   blocks of 8 with AVX2, 16 with AVX-512, padded up to a whole block), and reorders tensors into and out of it
   around the kernels that have no blocked form (a squeeze-excite's mean and product, a channel shuffle, a split
   or concatenation, a grouped convolution). A residual addition whose operands are in the layout the
   convolution that made one of them writes (and that has no activation and no other reader) becomes that
   convolution's ``Sum`` (blocked) or ``Z`` (plain) input, written in place. The rules followed here are the
   ones its NCHWc transformer applies to these networks:
   - a convolution with one group runs blocked when its input channels are a multiple of 4, or fewer than a
     block (then it reads the plain tensor); a depthwise one when its channels are a multiple of 4; a grouped one
     when each group's input and output channels fill whole blocks;
   - a windowed pool runs blocked when the channels fill whole blocks, the global one only on a blocked input;
   - an addition runs blocked only when both operands were made blocked (a tensor reordered into the layout for
     a convolution does not count), a concatenation when its parts also fill whole blocks;
   - a reorder out of the layout is made once, right after the node that made the tensor; one into it before the
     first node that needs it.
2. **It runs the nodes in its own order** (`execution_order`): a depth-first walk back from the outputs, inputs
   visited by descending node index, where the indices come from the pass that made each node. Where a network
   branches (a ShuffleNetV2 unit, a cell) that order decides what is alive together.
3. **Its allocation planner reuses buffers across layers** (`plan_peak`). The rules are the planner's (its
   ``allocation_planner.cc``):
   - an output aliases its input where the kernel says so (``Reshape``, ``Flatten``);
   - it is written in place where the kernel allows that and this is the input's last use (a ReLU, a
     convolution's ``Sum``; not an addition);
   - otherwise it takes the most recently freed buffer of exactly the same shape, or a new one.

   A buffer is held from its first use to the last use of any tensor that shares it. So a freed buffer the plan
   hands to a later tensor of the same shape stays allocated in between. That is why a squeeze-excite's buffers
   can cost memory several layers later.

Checked against the memory onnxruntime's profiler reports (`hardware_profiles.memory.onnx_activation_bytes`,
onnxruntime 1.32): the planner's rules applied to onnxruntime's own optimized graph give its figure after every node
of every network tried, and this walk, which never builds the network, gives its peak to the byte on 499 of 500
held-out networks of the five spaces (`bench/memory_energy.py`, README). Spaces whose layers are not one chain
build their graph themselves (`SearchSpace.runtime_graph`: MuffNet, NAS-Bench-201); a network no rule here builds
(a quantized layer, an activation onnxruntime runs as nodes of its own such as swish, a detector's heads, timm
blocks beyond ``ds``/``ir``/``cn``) raises `NotModelled`. Identical nodes are recognised by kind and operands
(and a pool's output size), which is enough for these spaces; a space with two pools of different kernels on one
tensor would need the kernel in that key.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ALIGN = 4   # channel multiple onnxruntime's NCHWc transformer asks of a blocked convolution's input
ALIASES = ("Reshape", "Flatten")   # kernels whose output shares their input's buffer


@dataclass(eq=False)
class Op:
    """One node of the graph onnxruntime runs: its inputs and outputs (value ids), the input it may be written
    in place over (a convolution's ``Sum``; None), and the layer of `layer_costs` it belongs to."""

    kind: str
    inputs: list[int]
    outputs: list[int]
    layer: int
    inplace: int | None = None   # the input it may be written over: a ReLU's, a convolution's Sum or Z
    stage: int = 0   # the optimizer pass that made it: 0 the exporter, 1 a fusion, 2 the NCHWc transformer
    blocked: bool = False   # an addition on the blocked layout
    act: bool = False   # a convolution with an activation fused into it
    seq: int = 0        # the order the network's forward makes the node it stems from in (the exporter's)
    sum_seq: int | None = None   # a convolution that took an addition: the exporter's order of that addition
    relu_seq: int | None = None  # ... that took a ReLU after the fact (`fuse_activations`): the ReLU's order


@dataclass(eq=False)
class _Tensor:
    """A tensor of the network as written: its plain and blocked values where they exist, whether a blocked
    kernel made it (what the transformer's additions ask), and the op that made it."""

    channels: int
    hw: tuple[int, int]
    plain: int | None = None
    blocked: int | None = None
    born_blocked: bool = False
    producer: Op | None = None


@dataclass
class OrtGraph:
    """The graph onnxruntime's CPU provider runs for a network, built layer by layer from its shapes (see the
    module). `block` is the NCHWc channel block (`hardware_profiles.memory.ort_channel_block`); 1 builds the graph
    without the blocked layout (onnxruntime off x86)."""

    block: int
    ops: list[Op] = field(default_factory=list)
    shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)
    layer: int = 0
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    _made_once: dict = field(default_factory=dict)   # nodes by (kind, operands): onnxruntime makes each once
    _seq: int = 0

    def _value(self, shape: tuple[int, ...]) -> int:
        self.shapes[len(self.shapes)] = shape
        return len(self.shapes) - 1

    def _op(self, kind: str, inputs: list[int], shapes: list[tuple[int, ...]], stage: int = 0,
            after: Op | None = None) -> Op:
        """A new node made by optimizer pass `stage` (`Op.stage`), at the end or right after `after`."""
        op = Op(kind, inputs, [self._value(s) for s in shapes], self.layer if after is None else after.layer,
                stage=stage, seq=self._next())
        self.ops.insert(len(self.ops) if after is None else self.ops.index(after) + 1, op)
        return op

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _padded(self, channels: int) -> int:
        return -(-channels // self.block) * self.block

    def input(self, channels: int, hw: tuple[int, int]) -> _Tensor:
        """The network's input: the caller's buffer (not the planner's)."""
        t = _Tensor(channels, hw, plain=self._value((1, channels, *hw)))
        self.inputs.append(t.plain)
        return t

    def plain(self, t: _Tensor) -> int:
        """`t` in the plain layout: reordered out of the blocked one, the first time a plain kernel needs it, right
        after the node that made it."""
        if t.plain is None:
            t.plain = self._op("ReorderOutput", [t.blocked], [(1, t.channels, *t.hw)], 2, t.producer).outputs[0]
        return t.plain

    def blocked(self, t: _Tensor) -> int:
        """`t` in the blocked layout, reordered into it the first time a blocked kernel needs it."""
        if t.blocked is None:
            t.blocked = self._op("ReorderInput", [t.plain], [(1, self._padded(t.channels), *t.hw)], 2).outputs[0]
        return t.blocked

    def _made(self, op: Op, channels: int, hw: tuple[int, int], blocked: bool) -> _Tensor:
        value = op.outputs[0]
        if blocked:
            return _Tensor(channels, hw, blocked=value, born_blocked=True, producer=op)
        return _Tensor(channels, hw, plain=value, producer=op)

    def conv(self, t: _Tensor, cout: int, hw: tuple[int, int], groups: int = 1, act: bool = True) -> _Tensor:
        """A convolution (BatchNorm folded, the activation fused when `act`)."""
        cin = t.channels
        depthwise = groups > 1 and groups == cin == cout
        nchw_input = groups == 1 and cin < self.block
        runs_blocked = self.block > 1 and (
            (groups == 1 and (nchw_input or cin % ALIGN == 0)) or (depthwise and cout % ALIGN == 0)
            or (not depthwise and groups > 1 and (cin // groups) % self.block == 0 == (cout // groups) % self.block))
        if not runs_blocked:
            op = self._op("FusedConv" if act else "Conv", [self.plain(t)], [(1, cout, *hw)], int(act))
        else:
            op = self._op("Conv", [self.plain(t) if nchw_input else self.blocked(t)],
                          [(1, self._padded(cout), *hw)], 2)
        op.act = act
        return self._made(op, cout, hw, runs_blocked)

    def convolve(self, t: _Tensor, spec, act: bool = True) -> _Tensor:
        """`conv` of a `search_spaces.costs.ConvSpec`."""
        return self.conv(t, spec.cout, (spec.hw_out, spec.hw_out), spec.groups, act)

    def add(self, a: _Tensor, b: _Tensor) -> _Tensor:
        """An addition: on the blocked layout when both operands were made blocked, plain otherwise (a
        convolution may take it as its Sum or Z later: `fuse_sums`)."""
        def make() -> _Tensor:
            if a.born_blocked and b.born_blocked:
                op = self._op("Add", [a.blocked, b.blocked], [self.shapes[a.blocked]])   # rewired, its node kept
                op.blocked = True
                return self._made(op, a.channels, a.hw, True)
            op = self._op("Add", [self.plain(a), self.plain(b)], [(1, a.channels, *a.hw)])
            return self._made(op, a.channels, a.hw, False)
        return self._once(("Add", a, b), make)

    def _once(self, key: tuple, make) -> _Tensor:
        """The node `key` names made once (onnxruntime's common-subexpression elimination keeps the first)."""
        if key not in self._made_once:
            self._made_once[key] = make()
        return self._made_once[key]

    def pool(self, t: _Tensor, hw: tuple[int, int], kind: str = "MaxPool") -> _Tensor:
        """Pooling (``MaxPool``, ``AveragePool``, ``GlobalAveragePool``), blocked when the channels fill whole
        blocks: a windowed pool reorders a plain input into the layout, the global one only takes a blocked one."""
        def make() -> _Tensor:
            if self.block > 1 and t.channels % self.block == 0 and (kind != "GlobalAveragePool" or t.blocked):
                op = self._op(kind, [self.blocked(t)], [(1, t.channels, *hw)], 2)
                return self._made(op, t.channels, hw, True)
            return self._made(self._op(kind, [self.plain(t)], [(1, t.channels, *hw)]), t.channels, hw, False)
        return self._once((kind, t, hw), make)

    def elementwise(self, t: _Tensor, kind: str) -> _Tensor:
        """A node of one input and its shape: an activation (``Relu``; in place over its input where this is the
        input's last use; on the blocked layout where the input was made blocked), ``BatchNormalization`` (a
        blocked convolution on a blocked input), or ``Zero`` (a product with 0, plain, a new tensor)."""
        def make() -> _Tensor:
            if t.born_blocked and kind != "Zero":
                op = self._op(kind if kind == "Relu" else "Conv", [t.blocked], [self.shapes[t.blocked]], 2)
                blocked = True
            else:
                op = self._op(kind, [self.plain(t)], [(1, t.channels, *t.hw)])
                blocked = False
            if kind == "Relu":
                op.inplace = op.inputs[0]
            return self._made(op, t.channels, t.hw, blocked)
        return self._once((kind, t), make)

    def squeeze_excite(self, t: _Tensor, reduced: int) -> _Tensor:
        """timm's squeeze-excite: a plain mean over the map, two 1x1 convolutions on the vector, and the gate's
        product, a new plain tensor."""
        mean = self._made(self._op("ReduceMean", [self.plain(t)], [(1, t.channels, 1, 1)]), t.channels, (1, 1),
                          False)
        gate = self.conv(self.conv(mean, reduced, (1, 1)), t.channels, (1, 1))
        op = self._op("Mul", [self.plain(t), self.plain(gate)], [(1, t.channels, *t.hw)])
        return self._made(op, t.channels, t.hw, False)

    def shuffle(self, t: _Tensor, groups: int) -> _Tensor:
        """ShuffleNet's channel shuffle: a reshape (an alias), a transpose (a copy) and a reshape back."""
        c, hw = t.channels, t.hw
        view = self._op("Reshape", [self.plain(t)], [(1, groups, c // groups, *hw)]).outputs[0]
        swapped = self._op("Transpose", [view], [(1, c // groups, groups, *hw)]).outputs[0]
        return self._made(self._op("Reshape", [swapped], [(1, c, *hw)]), c, hw, False)

    def split(self, t: _Tensor, parts: int) -> list[_Tensor]:
        """A split of the channels into equal plain parts (onnxruntime fuses a pair of slices into one)."""
        c = t.channels // parts
        op = self._op("Split", [self.plain(t)], [(1, c, *t.hw)] * parts, 1)
        return [_Tensor(c, t.hw, plain=value, producer=op) for value in op.outputs]

    def concat(self, parts: list[_Tensor]) -> _Tensor:
        """A concatenation of the channels: blocked when every part was made blocked and fills whole blocks, plain
        otherwise."""
        c, hw = sum(t.channels for t in parts), parts[0].hw
        if self.block > 1 and all(t.born_blocked and t.channels % self.block == 0 for t in parts):
            return self._made(self._op("Concat", [t.blocked for t in parts], [(1, c, *hw)], 2), c, hw, True)
        return self._made(self._op("Concat", [self.plain(t) for t in parts], [(1, c, *hw)]), c, hw, False)

    def classify(self, t: _Tensor, classes: int) -> None:
        """Flatten (an alias of the plain vector) and the linear classifier, whose output is the graph's."""
        flat = self._op("Flatten", [self.plain(t)], [(1, t.channels)]).outputs[0]
        self.outputs += self._op("Gemm", [flat], [(1, classes)]).outputs


def _readers(graph: OrtGraph) -> dict[int, int]:
    """How many nodes of `graph` read each value."""
    readers: dict[int, int] = {}
    for op in graph.ops:
        for value in op.inputs:
            readers[value] = readers.get(value, 0) + 1
    return readers


def _replace(graph: OrtGraph, old: int, new: int) -> None:
    """Every read of value `old` made a read of `new` (a node fused away)."""
    for op in graph.ops:
        op.inputs = [new if v == old else v for v in op.inputs]
        op.inplace = new if op.inplace == old else op.inplace
    graph.outputs = [new if v == old else v for v in graph.outputs]


def _lone_conv(graph: OrtGraph, value: int, readers: dict[int, int]) -> Op | None:
    """The convolution that made `value` for one reader alone, with no activation yet: what a fusion may take a
    node into; None otherwise."""
    conv = next((op for op in graph.ops if value in op.outputs), None)
    if conv is None or conv.kind not in ("Conv", "FusedConv") or conv.act or readers.get(value) != 1:
        return None
    return conv


def _fold(graph: OrtGraph, conv: Op, node: Op, value: int) -> None:
    """`node` folded into `conv`, whose output `value` stands for `node`'s from then on; a plain convolution the
    exporter wrote becomes a fused one."""
    graph.ops.remove(node)
    _replace(graph, node.outputs[0], value)
    if conv.stage == 0:
        conv.kind, conv.stage = "FusedConv", 1


def fuse_sums(graph: OrtGraph) -> None:
    """onnxruntime's convolution-addition fusion, on the finished graph: an addition one of whose operands a
    convolution made for it alone (no other node reads it; the convolution has no activation and no Sum yet), in
    that convolution's layout (a blocked addition and a blocked convolution: its ``Sum``; plain and plain: its
    ``Z``), becomes that convolution's last input, written in place; its first operand is tried first."""
    readers = _readers(graph)
    for add in [op for op in graph.ops if op.kind == "Add"]:
        for value, other in zip(add.inputs, add.inputs[::-1]):
            conv = _lone_conv(graph, value, readers)
            if conv is None or conv.inplace is not None or value == other or (conv.stage == 2) != add.blocked:
                continue
            conv.inputs.append(other)
            conv.inplace, conv.sum_seq = other, add.seq
            _fold(graph, conv, add, value)
            break


def fuse_activations(graph: OrtGraph) -> None:
    """onnxruntime's convolution-activation fusion, on the finished graph: a ``Relu`` whose input a convolution
    made for it alone (no other node reads it, and the convolution has no activation yet; a ``Sum`` it may have)
    becomes that convolution's activation."""
    readers = _readers(graph)
    for relu in [op for op in graph.ops if op.kind == "Relu"]:
        conv = _lone_conv(graph, relu.inputs[0], readers)
        if conv is None or relu.inputs[0] in graph.outputs:
            continue
        conv.relu_seq, conv.act = relu.seq, True
        _fold(graph, conv, relu, relu.inputs[0])


REORDERS = ("ReorderInput", "ReorderOutput")


def _topological(nodes: list[tuple], key) -> list[tuple]:
    """onnxruntime's default execution order of a graph: a depth-first walk back from the nodes whose outputs
    nothing reads, each node after its inputs' nodes, those visited in descending node index (`key`) (its
    ``Graph::ReverseDFSFrom``). `nodes`: (id, inputs, outputs) tuples."""
    made = {out: node for node in nodes for out in node[2]}
    read = {value for node in nodes for value in node[1]}
    order, seen = [], set()
    stack = [(node, False) for node in sorted((n for n in nodes if not read.intersection(n[2])), key=key)]
    while stack:
        node, leave = stack.pop()
        if leave:
            order.append(node)
        elif node[0] not in seen:
            seen.add(node[0])
            stack.append((node, True))
            inputs = {id(made[v]): made[v] for v in node[1] if v in made}
            stack += [(n, False) for n in sorted(inputs.values(), key=key) if n[0] not in seen]
    return order


def execution_order(graph: OrtGraph) -> list[Op]:
    """The order onnxruntime runs `graph`'s nodes in. It is the walk of `_topological`, whose node indices come
    from the passes that made the nodes: the exporter's order for the nodes it wrote; for a node a fusion made,
    its place in the walk of the exported graph; for a node the NCHWc transformer made, its place in the walk of
    the graph after the fusions. So each walk is taken of the graph as that pass saw it: the additions and ReLUs
    the NCHWc transformer later fused still separate and no reorders yet."""
    ops = list(graph.ops)
    source = {op.outputs[0]: op.inputs[0] for op in ops if op.kind in REORDERS}

    def src(value: int) -> int:
        while value in source:
            value = source[value]
        return value

    def early(fused: bool) -> list[tuple]:
        """The graph before the NCHWc transformer: each op's core node, then its addition and ReLU as separate
        nodes (after the fusions, `fused`, those a fusion pass took are part of the core)."""
        nodes = []
        for n, op in enumerate(ops):
            if op.kind in REORDERS:
                continue
            late_sum = op.sum_seq is not None and (not fused or op.stage == 2)
            late_relu = op.relu_seq is not None and (not fused or op.stage == 2 and op.sum_seq is not None)
            core_in = [src(v) for v in op.inputs if not (late_sum and v == op.inplace)]
            value = ("core", n)
            nodes.append((("core", n), core_in, [value] if late_sum or late_relu else [src(o) for o in op.outputs]))
            if late_sum:
                out = ("sum", n) if late_relu else src(op.outputs[0])
                nodes.append((("sum", n), [value, src(op.inplace)], [out]))
                value = out
            if late_relu:
                nodes.append((("relu", n), [value], [src(op.outputs[0])]))
        return nodes

    seqs = {("core", n): op.seq for n, op in enumerate(ops)}
    seqs.update({("sum", n): op.sum_seq for n, op in enumerate(ops) if op.sum_seq is not None})
    seqs.update({("relu", n): op.relu_seq for n, op in enumerate(ops) if op.relu_seq is not None})
    first = {node[0]: r for r, node in enumerate(_topological(early(False), lambda node: (0, seqs[node[0]])))}
    fusion = {n for n, op in enumerate(ops) if op.kind == "Split" or (op.act and op.relu_seq is None)
              or (op.relu_seq is not None and op.sum_seq is None) or (op.sum_seq is not None and op.stage == 1)}

    def index_after_fusions(node) -> tuple:
        kind, n = node[0]
        return (1, first[node[0]]) if kind == "core" and n in fusion else (0, seqs[node[0]])

    second = {node[0]: r for r, node in enumerate(_topological(early(True), index_after_fusions))}
    readers, producer = {}, {}   # value -> the first op reading it, the op making it
    for n, op in enumerate(ops):
        for value in op.inputs:
            readers.setdefault(value, n)
        producer.update((value, n) for value in op.outputs)

    def final_index(node) -> tuple:
        n = node[0]
        op = ops[n]
        if op.kind == "ReorderInput":
            return (2, second[("core", readers[op.outputs[0]])] - 0.5)
        if op.kind == "ReorderOutput":
            return (2, second[("core", producer[op.inputs[0]])] + 0.5)
        if op.stage == 2 and op.kind != "Relu":
            return (2, second[("core", n)])
        return (1, first[("core", n)]) if n in fusion else (0, op.seq)

    final = _topological([(n, op.inputs, op.outputs) for n, op in enumerate(ops)], final_index)
    return [ops[node[0]] for node in final]


def plan_peak(graph: OrtGraph) -> tuple[int, int]:
    """The most bytes (fp32) onnxruntime's planner holds at once while `graph` runs, after each node as its
    profiler reports it, and the layer of the node where that falls (see the module). The network's input is not
    counted: the caller owns it."""
    ops, shapes = graph.ops, graph.shapes
    uses: dict[int, int] = {}
    for value in [i for op in ops for i in op.inputs] + [o for op in ops for o in op.outputs] + graph.outputs:
        uses[value] = uses.get(value, 0) + 1
    if not ops:
        return 0, 0
    external = set(graph.inputs)
    buffer: dict[int, int] = {}   # value -> the value whose buffer it is written in
    free: list[int] = []          # buffers whose tensors are all dead, most recently freed first
    for op in ops:
        for out in op.outputs:
            reused = None
            if out in graph.outputs:
                pass
            elif op.kind in ALIASES:
                if op.inputs[0] in external:   # a view of the caller's buffer
                    external.add(out)
                    continue
                reused = buffer.get(op.inputs[0], op.inputs[0])
            else:
                if op.inplace is not None and op.inplace not in external:
                    root = buffer[op.inplace]
                    if uses[root] == 1 and shapes[op.inplace] == shapes[out]:
                        reused = root
                if reused is None:
                    reused = next((r for r in free if shapes[r] == shapes[out]), None)
                    if reused is not None:
                        free.remove(reused)
            buffer[out] = out if reused is None else reused
            if reused is not None:
                uses[reused] += uses[out]
        for value in [v for v in op.inputs + op.outputs if v not in external]:
            root = buffer[value]
            uses[root] -= 1
            if uses[root] == 0:
                free.insert(0, root)
    # a buffer is held from its first tensor's node to the last node that reads any tensor sharing it
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for n, op in enumerate(ops):
        for out in [o for o in op.outputs if o in buffer]:
            first.setdefault(buffer[out], n)
            last[buffer[out]] = n
        for value in op.inputs:
            if value in buffer:
                last[buffer[value]] = n
    for out in graph.outputs:
        last[buffer[out]] = len(ops)
    held = [0] * (len(ops) + 1)
    for root, start in first.items():
        size = 4
        for d in shapes[root]:
            size *= d
        for n in range(start, last[root] + 1):
            held[n] += size
    top = max(range(len(ops)), key=held.__getitem__)
    return held[top], ops[top].layer


SE_FREE = ("stem", "cn", "skip", "head", "classifier")   # layer ops without a squeeze-excite or a residual
CHAIN_OPS = SE_FREE + ("ds", "dsa", "ir", "fbnet")   # the layer ops `chain_layer` builds


class NotModelled(ValueError):
    """A network whose onnxruntime graph `ort_graph` does not build (a layer it has no rule for, layers that are
    not one chain, a quantized layer): `predictors.memory.inference_memory` takes its fused walk instead."""


def _hw(c) -> tuple[int, int]:
    return (c.hw_out, c.hw_out)


FUSED_ACTS = ("relu", "relu6", "hard_swish", "none")   # activations a convolution takes (or none): no node


def chain_layer(g: OrtGraph, t: _Tensor, lc, classes: int) -> _Tensor:
    """One layer of a chain network (the MobileNet-style blocks, FBNet's and NAS-Bench-Macro's layers, a stem, a
    head, a classifier) into `g`, from its cost key and convolutions.

    Raises:
        NotModelled: a layer no rule here builds (another op, an activation onnxruntime runs as nodes of its own,
            mixed kernels, split 1x1 convs, 'same' padding, a head without a convolution or with a norm), or one
            that does not read the previous layer's output.
    """
    key = lc.key
    if key.op not in CHAIN_OPS or key.act not in FUSED_ACTS or key.kernels or key.exp_splits > 1 \
            or key.proj_splits > 1 or key.same_pad or key.norm or key.precision != "fp32" \
            or (key.op == "head" and not lc.convs):
        raise NotModelled(f"layer {key}: no onnxruntime graph rule for it")
    if tuple(key.in_shape) != (t.channels, *t.hw):
        raise NotModelled(f"layer {key}: does not read the previous layer's output (not one chain)")
    act = key.act != "none"
    if key.op == "classifier":
        g.classify(t, classes)
        return t
    if key.op == "head":
        conv = lc.convs[0]
        if conv.hw_in != key.in_shape[1]:   # pooled first (MobileNetV3's head), then a 1x1 conv on the vector
            return g.convolve(g.pool(t, (1, 1), "GlobalAveragePool"), conv, act)
        return g.pool(g.convolve(t, conv, act), (1, 1), "GlobalAveragePool")
    main = [c for c in lc.convs if not (key.se and c.hw_in == c.hw_out == 1)]
    depthwise = [i for i, c in enumerate(main) if c.groups > 1 and c.groups == c.cin == c.cout]
    x = t
    for i, c in enumerate(main):
        last = i == len(main) - 1 and key.op not in SE_FREE   # a block's projection: no activation ('dsa' has one)
        x = g.convolve(x, c, act and (not last or key.op == "dsa"))
        if i == 0 and key.groups > 1 and depthwise == [1]:
            x = g.shuffle(x, key.groups)   # FBNet's grouped 1x1 conv, shuffled before the depthwise one
        if key.se and depthwise and i == depthwise[-1]:
            x = g.squeeze_excite(x, key.se)   # timm's: after the depthwise conv
    return g.add(x, t) if key.skip else x


def ort_graph(space, arch, block: int, layers=None) -> OrtGraph:
    """The graph onnxruntime's CPU provider runs for `arch` at batch 1 (see the module): the space's own
    (`SearchSpace.runtime_graph`) where its layers are not one chain, else its layers one after another.

    Raises:
        NotModelled: a layer no rule here builds (`chain_layer`), or a quantized one.
    """
    layers = space.layer_costs(arch) if layers is None else layers
    if any(lc.key.precision != "fp32" for lc in layers):
        raise NotModelled("a quantized layer: onnxruntime runs another graph for it")
    g = OrtGraph(block)
    shape = space.input_shape(arch)
    t = g.input(shape[1], tuple(shape[2:]))
    try:
        own = space.runtime_graph(arch, g, t, layers)
    except (IndexError, KeyError, StopIteration, ValueError) as err:   # layers not as the space builds them
        raise NotModelled(f"{space.name}: its graph does not follow these layers ({err!r})") from None
    if not own:
        for n, lc in enumerate(layers):
            g.layer = n
            t = chain_layer(g, t, lc, space.num_classes)
    fuse_sums(g)
    fuse_activations(g)
    g.ops[:] = execution_order(g)
    return g
