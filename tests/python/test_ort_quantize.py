"""Tests of bench/ort_quantize.py, the ONNX Runtime int8 peer of compare.py:
the rewritten graph, evaluated by a small numpy interpreter of the ONNX
operators' specifications, must compute the float graph's products within
int8 quantisation error and leave everything else as it was."""

import os
import sys
import tempfile
import unittest

import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # python3-onnx: installed by ./setup.sh --test
    onnx = None

BENCH = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))


def saturate_u8(v):
    return np.clip(v, 0, 255).astype(np.uint8)


def step(t):
    """DynamicQuantizeLinear's step: the range [min(0, min t), max(0, max t)] / 255."""
    return (max(0.0, float(t.max())) - min(0.0, float(t.min()))) / 255.0


def product_bound(a, b, a_step, b_step):
    """Largest |a_q b_q - a b| per element of a b (float64) when each element
    of a and b is at most half its step (b_step per column, or one step) off:
    half a's step times sum |b| over k, |a| summed over k times half b's step,
    and the two half steps' product over K."""
    return (0.5 * a_step * np.abs(b).sum(axis=-2, keepdims=True) +
            0.5 * np.abs(a).sum(axis=-1, keepdims=True) * b_step + 0.25 * a_step * b_step * a.shape[-1])


def run(model, feeds):
    """The graph's outputs, operator by operator as the ONNX specification
    defines them (only the operators these graphs use)."""
    env = dict(feeds)
    env.update({t.name: numpy_helper.to_array(t) for t in model.graph.initializer})
    for n in model.graph.node:
        x = [env[i] for i in n.input]
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Identity":
            out = [x[0]]
        elif n.op_type == "MatMul":
            out = [np.matmul(x[0], x[1])]
        elif n.op_type == "Transpose":
            out = [np.transpose(x[0], attrs["perm"])]
        elif n.op_type == "DynamicQuantizeLinear":
            lo, hi = min(0.0, float(x[0].min())), max(0.0, float(x[0].max()))
            scale = np.float32((hi - lo) / 255.0)
            zero = saturate_u8(np.rint(-lo / scale))
            out = [saturate_u8(np.rint(x[0] / scale) + zero), scale, zero]
        elif n.op_type == "MatMulInteger":
            a = x[0].astype(np.int32) - (x[2].astype(np.int32) if len(x) > 2 else 0)
            b = x[1].astype(np.int32) - (x[3].astype(np.int32) if len(x) > 3 else 0)
            out = [np.matmul(a, b)]
        elif n.op_type == "Cast":
            out = [x[0].astype(np.float32)]
        elif n.op_type == "Mul":
            out = [np.multiply(x[0], x[1])]
        else:
            raise AssertionError("operator %s not expected in these graphs" % n.op_type)
        env.update(zip(n.output, out))
    return [env[o.name] for o in model.graph.output]


@unittest.skipIf(onnx is None, "python3-onnx is not installed")
class OrtQuantizeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, BENCH)
        import ort_quantize
        cls.quantize = staticmethod(ort_quantize.quantize_dynamic)

    def graph(self, with_weights=True):
        """y1 = x w, y2 = x w (w shared through Identity, as torch.onnx.export
        writes equal weights), y3 = y1 y2^T (two activations)."""
        rng = np.random.default_rng(3)
        w = rng.standard_normal((24, 10)).astype(np.float32)
        w[:, 3] *= 40.0  # columns of very different ranges: per-column scales
        w[:, 7] = 0.0  # an all-zero column
        nodes = [helper.make_node("Identity", ["w"], ["w_alias"]),
                 helper.make_node("MatMul", ["x", "w" if with_weights else "v"], ["y1"]),
                 helper.make_node("MatMul", ["x", "w_alias" if with_weights else "v"], ["y2"]),
                 helper.make_node("Transpose", ["y2"], ["y2t"], perm=[0, 2, 1]),
                 helper.make_node("MatMul", ["y1", "y2t"], ["y3"])]
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 24])]
        if not with_weights:
            inputs.append(helper.make_tensor_value_info("v", TensorProto.FLOAT, [24, 10]))
        g = helper.make_graph(nodes, "g", inputs,
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
                               for n, shape in (("y1", [2, 5, 10]), ("y2", [2, 5, 10]), ("y3", [2, 5, 5]))],
                              [numpy_helper.from_array(w, "w")])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        x = rng.standard_normal((2, 5, 24)).astype(np.float32)
        return model, w, x

    def rewrite(self, model, activation_products=False):
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = os.path.join(tmp, "f.onnx"), os.path.join(tmp, "q.onnx")
            onnx.save(model, src)
            count = self.quantize(src, dst, activation_products)
            return count, onnx.load(dst)

    def test_products_within_quantisation_error(self):
        model, w, x = self.graph()
        count, q = self.rewrite(model)
        self.assertEqual(count, 2)
        y1, y2, y3 = run(q, {"x": x})
        want = np.matmul(x.astype(np.float64), w.astype(np.float64))
        # x per tensor (range / 255), w per column (max |w| / 127).
        bound = product_bound(x.astype(np.float64), w.astype(np.float64), step(x), np.abs(w).max(axis=0) / 127.0)
        for y in (y1, y2):
            self.assertTrue(np.all(np.abs(y - want) <= bound + 1e-5 * np.abs(want).max()))
        # The error is of that order, not far below it (the graph quantises).
        self.assertGreater(np.abs(y1 - want).max(), 1e-3 * bound.max())
        np.testing.assert_array_equal(y1, y2)
        self.assertTrue(np.all(y1[..., 7] == 0.0))
        # The product of two activations is left as it was (fp32, exact).
        np.testing.assert_array_equal(y3, np.matmul(y1, np.transpose(y2, (0, 2, 1))))

    def test_graph_structure(self):
        model, w, _ = self.graph()
        _, q = self.rewrite(model)
        ops = [n.op_type for n in q.graph.node]
        self.assertEqual(ops.count("MatMulInteger"), 2)
        self.assertEqual(ops.count("DynamicQuantizeLinear"), 2)
        self.assertEqual(ops.count("MatMul"), 1)  # y1 y2^T
        self.assertNotIn("Identity", ops)  # its only users were quantised
        weights = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
        int8 = [a for a in weights.values() if a.dtype == np.int8]
        self.assertEqual(len(int8), 1)  # the shared weight quantised once
        self.assertNotIn("w", weights)  # the float weight is gone
        scales = [a for a in weights.values() if a.dtype == np.float32]
        self.assertEqual(len(scales), 1)
        np.testing.assert_allclose(scales[0][[0, 3]], np.abs(w).max(axis=0)[[0, 3]] / 127.0, rtol=1e-6)
        self.assertEqual(scales[0][7], 1.0)  # an all-zero column: scale 1, values 0
        self.assertTrue(np.all(np.abs(int8[0].astype(np.int32)) <= 127))
        self.assertEqual([o.name for o in q.graph.output], ["y1", "y2", "y3"])

    def test_activation_products(self):
        """ORT's default: the product of two activations in int8 too, each
        operand quantised per tensor with its zero point."""
        model, _, x = self.graph()
        count, q = self.rewrite(model, activation_products=True)
        self.assertEqual(count, 3)
        ops = [n.op_type for n in q.graph.node]
        self.assertEqual(ops.count("MatMulInteger"), 3)
        self.assertNotIn("MatMul", ops)
        y1, y2, y3 = run(q, {"x": x})
        a, b = y1.astype(np.float64), np.transpose(y2, (0, 2, 1)).astype(np.float64)
        want = np.matmul(a, b)
        bound = product_bound(a, b, step(a), step(b))
        self.assertTrue(np.all(np.abs(y3 - want) <= bound + 1e-5 * np.abs(want).max()))
        self.assertGreater(np.abs(y3 - want).max(), 1e-3 * bound.max())

    def test_graph_without_weights_is_refused(self):
        model, _, _ = self.graph(with_weights=False)
        with self.assertRaisesRegex(ValueError, "no MatMul with a 2-D float weight"):
            self.rewrite(model)


if __name__ == "__main__":
    unittest.main()
