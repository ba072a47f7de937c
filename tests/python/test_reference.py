"""Tests of tools/lemevit_ref.py against SPEC.md (run from the repo root:
/usr/bin/python3 -m unittest discover -s tests/python -t .)."""

import math
import os
import sys
import unittest

import torch
import torch.nn.functional as F

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools")
sys.path.insert(0, os.path.abspath(TOOLS))
import convert  # noqa: E402
import lemevit_ref as ref  # noqa: E402

torch.set_num_threads(1)

SMALL = dict(depths=(1, 1, 1, 1, 1), dims=(32, 32, 64, 96, 128), kinds=("C", "D2", "D", "S", "S"),
             mlp_ratio=3, head_dim=16, meta_tokens=8, in_chans=3)

_models = {}


def variant_model(name):
    """Each official variant built once (default init) for the whole run."""
    if name not in _models:
        _models[name] = ref.build(name)
    return _models[name]


def small_model(seed=0, dca_scale="official", **over):
    arch = dict(SMALL, **over)
    m = ref.LeMeViT(num_classes=7, dca_scale=dca_scale, **arch)
    return ref.init_test_weights(m, seed).double().eval()


def rel(a, b):
    return float((a - b).norm() / b.norm())


class TestVariants(unittest.TestCase):
    def test_param_counts_match_spec(self):
        for name, want in ref.SPEC_PARAMS_M.items():
            with self.subTest(name):
                self.assertEqual(round(ref.count_params(variant_model(name)) / 1e6, 2), want)

    def test_state_dict_matches_converter_table(self):
        # Two independent derivations of the official key set must agree.
        for name in ref.VARIANTS:
            with self.subTest(name):
                arch = dict(ref.VARIANTS[name], num_classes=1000)
                sd = convert.drop_bookkeeping(variant_model(name).state_dict())
                exp = convert.expected_shapes(arch)
                self.assertEqual(sorted(sd), sorted(exp))
                for k, t in sd.items():
                    self.assertEqual(tuple(t.shape), tuple(exp[k]), k)

    def test_official_key_spellings(self):
        keys = set(variant_model("lemevit_tiny").state_dict())
        for k in ("meta_tokens", "downsample_layers.0.4.num_batches_tracked",
                  "downsample_layers.2.1.running_var", "meta_token_downsample.0.4.bias",
                  "stages.0.0.attn.q.weight", "stages.0.0.attn.kv.bias",
                  "stages.1.1.attn.qkv2.weight", "stages.2.0.attn.proj_c.bias",
                  "stages.3.7.attn.qkv.weight", "stages.4.1.mlp.3.weight", "norm.running_mean",
                  "norm_c.weight", "head.bias"):
            self.assertIn(k, keys)
        self.assertFalse(any(k.startswith("downsample_layers.1.") for k in keys),
                         "downsample after the C stage must be Identity")
        v2 = set(variant_model("lemevit_tiny_v2").state_dict())
        self.assertIn("stages.1.0.attn.qv1.weight", v2)
        self.assertIn("stages.2.1.attn.kv2.bias", v2)
        vit = set(variant_model("vit_tiny").state_dict())
        self.assertIn("downsample_layers.1.0.weight", vit)
        self.assertEqual(variant_model("vit_tiny").stages[0][0].attn.__class__.__name__,
                         "SelfAttention")

    def test_eps_and_gelu(self):
        m = variant_model("lemevit_tiny")
        self.assertEqual(m.stages[1][0].norm1.eps, 1e-6)
        self.assertEqual(m.stages[1][0].norm2.eps, 1e-6)
        self.assertEqual(m.meta_token_downsample[2][1].eps, 1e-5)
        self.assertEqual(m.meta_token_downsample[2][4].eps, 1e-5)
        self.assertEqual(m.norm_c.eps, 1e-5)
        self.assertEqual(m.norm.eps, 1e-5)
        self.assertEqual(m.stages[1][0].mlp[2].approximate, "none")


class TestSemantics(unittest.TestCase):
    def test_dca_scale_numbers(self):
        sx, sc = ref.dca_scales(3136, 16, 64, 32, "official")  # tiny stage 1 at 224
        self.assertAlmostEqual(sx, math.log(16) / math.log(3136) / 8, places=12)
        self.assertAlmostEqual(sx, 0.0431, delta=1e-4)  # SPEC: "≈ 0.0431"
        self.assertEqual(sc, 0.125)
        for s in ref.dca_scales(3136, 16, 64, 32, "head_dim"):
            self.assertAlmostEqual(s, 32 ** -0.5, places=15)
        with self.assertRaises(ValueError):
            ref.dca_scales(1, 16, 64, 32, "official")

    @torch.no_grad()
    def test_scale_policies_differ(self):
        m = small_model(1)
        x = torch.randn(2, 3, 96, 64, dtype=torch.float64)
        a = m(x)
        b = m.set_dca_scale("head_dim")(x)
        self.assertGreater(rel(b, a), 1e-2)
        # Only D/D2 blocks react: an all-S model is policy independent.
        s = small_model(1, kinds=("S",) * 5, dims=(32, 64, 64, 96, 128))
        self.assertTrue(torch.equal(s(x), s.set_dca_scale("head_dim")(x)))

    @torch.no_grad()
    def test_d2_is_d_with_tied_roles(self):
        # D2 == D whose x-side key equals its query (k1 = q) and whose c-side
        # query equals its key (q2 = k): this pins the D2 role swap
        # (c-branch queries k, keys q, values v1).
        x = torch.randn(1, 3, 96, 64, dtype=torch.float64)
        for policy in ("official", "head_dim"):
            m2 = small_model(2, policy, kinds=("C", "D2", "D2", "S", "S"))
            m1 = ref.LeMeViT(num_classes=7, dca_scale=policy,
                             **dict(SMALL, kinds=("C", "D", "D", "S", "S"))).double().eval()
            sd = {}
            for k, v in m2.state_dict().items():
                if ".attn.qv1." in k:
                    q, v1 = v.chunk(2, 0)
                    sd[k.replace("qv1", "qkv1")] = torch.cat([q, q, v1], 0)
                elif ".attn.kv2." in k:
                    kk, v2 = v.chunk(2, 0)
                    sd[k.replace("kv2", "qkv2")] = torch.cat([kk, kk, v2], 0)
                else:
                    sd[k] = v
            m1.load_state_dict(sd)
            with self.subTest(policy):
                torch.testing.assert_close(m1(x), m2(x), rtol=1e-10, atol=1e-10)
                # Untie: D with independent k1/q2 must differ from D2.
                for blk in list(m1.stages[1]) + list(m1.stages[2]):
                    c = blk.attn.qkv1.weight.shape[1]
                    for w in (blk.attn.qkv1.weight[c:2 * c], blk.attn.qkv2.weight[:c]):
                        w.copy_(torch.randn(c, c, dtype=torch.float64) / c ** 0.5)
                self.assertGreater(rel(m1(x), m2(x)), 1e-3)

    @torch.no_grad()
    def test_self_attention_matches_torch_mha(self):
        # (head, head_dim) channel layout and 1/sqrt(head_dim) scale, checked
        # against PyTorch's own multi-head attention.
        torch.manual_seed(3)
        att = ref.SelfAttention(64, 16).double()
        for p in att.parameters():
            p.normal_(0, 0.3)
        t = torch.randn(2, 10, 64, dtype=torch.float64)
        want, _ = F.multi_head_attention_forward(
            t.transpose(0, 1), t.transpose(0, 1), t.transpose(0, 1), 64, 4,
            att.qkv.weight, att.qkv.bias, None, None, False, 0.0, att.proj.weight,
            att.proj.bias, training=False, need_weights=False)
        torch.testing.assert_close(att(t), want.transpose(0, 1), rtol=1e-10, atol=1e-10)

    @torch.no_grad()
    def test_c_block_returns_x_unchanged(self):
        m = small_model(4)
        x = torch.randn(1, 3, 96, 64, dtype=torch.float64)
        feats = m.forward_features(x)
        stem = m.downsample_layers[0](x)
        self.assertTrue(torch.equal(feats[0], stem))
        # ...while the pos_embed of that C block still matters through c.
        a = m(x)
        m.stages[0][0].pos_embed.weight.mul_(2)
        self.assertGreater(rel(m(x), a), 1e-3)

    @torch.no_grad()
    def test_forward_features_shapes(self):
        m = small_model(5)
        feats = m.forward_features(torch.randn(3, 3, 96, 64, dtype=torch.float64))
        self.assertEqual([tuple(f.shape) for f in feats],
                         [(3, 32, 24, 16), (3, 32, 24, 16), (3, 64, 12, 8), (3, 96, 6, 4),
                          (3, 128, 3, 2)])
        vit = ref.build("vit_tiny").eval()
        feats = vit.forward_features(torch.randn(1, 3, 224, 224))
        self.assertEqual([f.shape[-1] for f in feats], [56, 28, 14, 7])

    @torch.no_grad()
    def test_head_combines_bn_pool_and_token_mean(self):
        m = small_model(6)
        x = torch.randn(2, 3, 96, 64, dtype=torch.float64)
        feats, c = m._trunk(x)
        bn = m.norm
        xn = (feats[-1] - bn.running_mean[None, :, None, None]) / torch.sqrt(
            bn.running_var[None, :, None, None] + 1e-5) * bn.weight[None, :, None, None] \
            + bn.bias[None, :, None, None]
        cn = F.layer_norm(c, (c.shape[-1],), m.norm_c.weight, m.norm_c.bias, 1e-5)
        want = F.linear(xn.mean((2, 3)) + cn.mean(1), m.head.weight, m.head.bias)
        torch.testing.assert_close(m(x), want, rtol=1e-10, atol=1e-10)

    @torch.no_grad()
    def test_test_weights_make_eps_visible(self):
        # init_test_weights shrinks two LayerNorm inputs so that an eps
        # mix-up is far above float32 noise (~4e-7) in the golden logits.
        m = small_model(7)
        x = torch.randn(1, 3, 96, 64, dtype=torch.float64)
        a = m(x)
        for want_eps, wrong_eps in ((1e-6, 1e-5), (1e-5, 1e-6)):
            ln = [mod for mod in m.modules()
                  if isinstance(mod, torch.nn.LayerNorm) and mod.eps == want_eps]
            for mod in ln:
                mod.eps = wrong_eps
            with self.subTest(eps=want_eps):
                self.assertGreater(rel(m(x), a), 1e-4)
            for mod in ln:
                mod.eps = want_eps

    def test_invalid_configs_rejected(self):
        with self.assertRaises(ValueError):
            ref.LeMeViT(depths=(1, 1), dims=(32, 64), kinds=("C", "S"), head_dim=16)
        with self.assertRaises(ValueError):
            ref.LeMeViT(depths=(1,), dims=(48,), kinds=("S",), head_dim=32)
        with self.assertRaises(ValueError):
            ref.LeMeViT(depths=(1,), dims=(32,), kinds=("X",), head_dim=16)


if __name__ == "__main__":
    unittest.main()
