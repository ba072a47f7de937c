#!/usr/bin/env python3
"""Dynamic int8 quantisation of an ONNX graph for ONNX Runtime, the same
arithmetic choice as `lemevit --precision int8`: the peer a deployer would
put beside our int8.

    /usr/bin/python3 bench/ort_quantize.py [--activation-products] model.onnx model_int8.onnx

Every MatMul whose second input is a 2-D weight (the Linear layers: q/k/v,
output and MLP projections, the meta-token layers) becomes what ONNX
Runtime's own quantize_dynamic writes for it:

    DynamicQuantizeLinear(x) -> x_q (uint8), x_scale, x_zero
    MatMulInteger(x_q, w_q, x_zero)  -> int32
    Cast(float) * (x_scale * w_scale)

with w_q int8 per output channel, symmetric (w_scale = max|w| / 127, as
ours). ORT fuses that pattern into its DynamicQuantizeMatMul kernel. What
differs from ours, as ORT's operators allow: x is quantised per tensor (the
whole activation of the batch), not per row. Attention's products (MatMul of
two activations), the convolutions and the head's Gemm stay fp32; ours runs
the stem's first conv and the head in fp32, attention in bf16 or fp32, and
the downsampling convs in int8. (onnxruntime's Python package, which has
quantize_dynamic, is not in Debian; python3-onnx is.)

--activation-products also quantises the MatMuls of two activations
(attention's q k^T and p v), each operand per tensor to uint8, as
quantize_dynamic does by default: ORT's default, not ours.
"""

import sys

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper


def dynamic_quantize(x, p):
    """DynamicQuantizeLinear of x: the node and its outputs (q, scale, zero)."""
    out = [p + "_q", p + "_scale", p + "_zero"]
    return helper.make_node("DynamicQuantizeLinear", [x], out, p + "_quant"), out


def integer_matmul(p, a, b, out):
    """out = float((a.q - a.zero) (b.q - b.zero)) * (a.scale * b.scale), a and b
    (q, scale, zero) triples; a zero of None is 0 (symmetric weights)."""
    zeros = [a[2]] + ([b[2]] if b[2] else [])
    return [
        helper.make_node("MatMulInteger", [a[0], b[0]] + zeros, [p + "_acc"], p + "_matmul"),
        helper.make_node("Mul", [a[1], b[1]], [p + "_scale"], p + "_scales"),
        helper.make_node("Cast", [p + "_acc"], [p + "_accf"], p + "_cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [p + "_accf", p + "_scale"], [out], p + "_dequant"),
    ]


def quantize_dynamic(src, dst, activation_products=False):
    """Writes dst, src with its weight MatMuls (and, with
    activation_products, its MatMuls of two activations) in int8; returns
    how many MatMuls it quantised."""
    model = onnx.load(src)
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    # torch.onnx.export shares equal weights through Identity nodes.
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in weights}
    nodes, added, quantised, count, with_weights = [], [], {}, 0, 0
    for node in graph.node:
        name = alias.get(node.input[1], node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        w = weights.get(name)
        p = "%s_int8_%d" % (node.name or "matmul", count)
        if (activation_products and name is not None and w is None and
                alias.get(node.input[0], node.input[0]) not in weights):
            qa, a = dynamic_quantize(node.input[0], p + "_a")
            qb, b = dynamic_quantize(node.input[1], p + "_b")
            nodes += [qa, qb] + integer_matmul(p, a, b, node.output[0])
            count += 1
            continue
        if w is None or len(w.dims) != 2 or w.data_type != TensorProto.FLOAT:
            nodes.append(node)
            continue
        if name not in quantised:
            wf = numpy_helper.to_array(w).astype(np.float64)  # (in, out)
            amax = np.abs(wf).max(axis=0)
            scale = np.where((amax > 0) & np.isfinite(amax), amax / 127.0, 1.0).astype(np.float32)
            wq = np.clip(np.rint(wf / scale), -127, 127).astype(np.int8)
            quantised[name] = (name + "_int8", name + "_int8_scale")
            added += [numpy_helper.from_array(wq, quantised[name][0]),
                      numpy_helper.from_array(scale, quantised[name][1])]
        wq_name, scale_name = quantised[name]
        qx, x = dynamic_quantize(node.input[0], p + "_x")
        nodes += [qx] + integer_matmul(p, x, (wq_name, scale_name, None), node.output[0])
        count += 1
        with_weights += 1
    if with_weights == 0:
        raise ValueError("%s: no MatMul with a 2-D float weight to quantise" % src)
    # Identity aliases whose only readers were quantised go, then the float
    # weights nothing reads any more.
    used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    nodes = [n for n in nodes if n.op_type != "Identity" or n.output[0] in used]
    used = {i for n in nodes for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep + added)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ValueError("%s: the quantised graph is not valid ONNX: %s" % (src, e)) from e
    onnx.save(model, dst)
    return count


def main():
    args = sys.argv[1:]
    activation_products = "--activation-products" in args
    args = [a for a in args if a != "--activation-products"]
    if len(args) != 2 or any(a.startswith("--") for a in args):
        sys.exit("usage: ort_quantize.py [--activation-products] model.onnx model_int8.onnx")
    try:
        n = quantize_dynamic(args[0], args[1], activation_products)
    except (OSError, ValueError) as e:
        sys.exit("ort_quantize.py: %s" % e)
    except DecodeError as e:
        sys.exit("ort_quantize.py: %s is not an ONNX model (%s)" % (args[0], e))
    print("%s: %d MatMul(s) in int8" % (args[1], n))


if __name__ == "__main__":
    main()
