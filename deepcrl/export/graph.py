"""Rewrites of an exported ONNX graph: loop-invariant hoisting and float16 conversion.

Both keep the function the graph computes; the export's parity check runs after them and verifies it.
"""

from __future__ import annotations

from deepcrl.errors import DeepcrlError


def hoist_loop_invariants(model) -> int:
    """Stop passing unchanged tensors through `Loop` bodies as loop-carried state; returns how many.

    jax2onnx lowers `jax.lax.scan` over stacked block weights to a `Loop` whose carried state includes every
    stacked weight tensor, passed through unchanged (`Identity`). ONNX Runtime copies carried state on every
    iteration: for a depth-64, width-256 teacher that is 16 MB per block. A Loop body may read outer-scope
    values directly, so each such pass-through is replaced by a reference to the value it carries. The graph
    computes the same thing; the parity check that follows verifies it.
    """
    used_outside = {name for n in model.graph.node for name in _uses(n)} | {o.name for o in model.graph.output}
    hoisted = 0
    for loop in model.graph.node:
        if loop.op_type != "Loop":
            continue
        body = next(a.g for a in loop.attribute if a.name == "body")
        producer = {out: n for n in body.node for out in n.output}
        defined = set(producer) | {i.name for i in body.input} | {i.name for i in body.initializer}
        n_carried = len(loop.input) - 2
        drop = []
        for k in range(n_carried):
            carried_in, carried_out = body.input[k + 2].name, body.output[k + 1].name
            outer, final = loop.input[k + 2], loop.output[k]
            node = producer.get(carried_out)
            if (node is None or node.op_type != "Identity" or list(node.input) != [carried_in] or not outer
                    or final in used_outside or outer in defined):
                continue
            drop.append((k, node, carried_in, outer))
        for k, node, carried_in, outer in reversed(drop):
            body.node.remove(node)
            for n in body.node:
                _rename_input(n, carried_in, outer)
            del body.input[k + 2]
            del body.output[k + 1]
            del loop.input[k + 2]
            del loop.output[k]
            hoisted += 1
    kept = {o for n in model.graph.node for o in n.output}
    keep_info = [v for v in model.graph.value_info if v.name in kept]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep_info)
    return hoisted


def _uses(node) -> set[str]:
    names = set(node.input)
    for graph in _subgraphs(node):
        for n in graph.node:
            names |= _uses(n)
    return names


def _rename_input(node, old: str, new: str) -> None:
    for i, name in enumerate(node.input):
        if name == old:
            node.input[i] = new
    for graph in _subgraphs(node):
        for n in graph.node:
            _rename_input(n, old, new)


def _subgraphs(node):
    import onnx

    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def to_float16(model):
    """Float16 weights and compute with float32 inputs/outputs (ONNX Runtime's converter).

    The converter appends its input casts at the end of the node list, so the graph is re-sorted. It
    mistypes values inside `Loop` bodies, so scanned teachers are refused (export a student for GPU fp16).
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if any(n.op_type in ("Loop", "Scan", "If") for n in model.graph.node):
        raise DeepcrlError("--fp16 does not support a scanned teacher (its blocks are an ONNX Loop, which "
                           "ONNX Runtime's float16 converter mistypes); export it in float32 or export a student.")
    model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    _topological_sort(model.graph)
    return model


def _topological_sort(graph) -> None:
    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    order, done = [], set()

    def visit(i: int) -> None:
        stack = [(i, False)]
        while stack:
            j, expanded = stack.pop()
            if j in done:
                continue
            if expanded:
                done.add(j)
                order.append(nodes[j])
                continue
            stack.append((j, True))
            for name in reversed(nodes[j].input):
                k = producer.get(name)
                if k is not None and k not in done and k != j:
                    stack.append((k, False))

    for i in range(len(nodes)):
        visit(i)
    del graph.node[:]
    graph.node.extend(order)
