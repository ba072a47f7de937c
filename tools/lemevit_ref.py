"""Independent PyTorch reference implementation of LeMeViT.

Written from shared/SPEC.md (the project's model contract), not from the
official code.  It exists to produce golden outputs for the C++ library and to
document the semantics in executable form.  Parameter and buffer names match
the official state-dict keys exactly, so an official checkpoint loads with
``load_state_dict`` (``num_batches_tracked`` included).

Traps handled here on purpose (see SPEC "Trained-checkpoint semantics"):
  * a ``C`` block updates only the meta tokens and returns x as it was
    *before* the positional-encoding conv;
  * ``D``/``D2`` attention scales: policy "official" uses
    scale_x = ln(M)/ln(N)/sqrt(C) and scale_c = 1/sqrt(C) with C the full
    stage width; policy "head_dim" uses 1/sqrt(head_dim) for both;
    ``C`` and ``S`` always use 1/sqrt(head_dim);
  * ``D2``: x-branch softmax(q k^T) v2, c-branch queries k, keys q, values v1;
  * LayerNorm eps 1e-6 in blocks, 1e-5 in meta_token_downsample and norm_c;
  * exact (erf) GELU; BatchNorm used in eval mode.
"""

import math

import torch
from torch import nn

KINDS = ("C", "D", "D2", "S")
DCA_SCALE_POLICIES = ("official", "head_dim")

# Official registrations (SPEC "Variants").  All share head_dim 32, 16 meta
# tokens and 3 input channels.
VARIANTS = {
    "lemevit_tiny": dict(depths=(1, 2, 2, 8, 2), dims=(64, 64, 128, 192, 320),
                         kinds=("C", "D", "D", "S", "S"), mlp_ratio=4),
    "lemevit_small": dict(depths=(1, 2, 2, 6, 2), dims=(96, 96, 192, 320, 384),
                          kinds=("C", "D", "D", "S", "S"), mlp_ratio=4),
    "lemevit_base": dict(depths=(2, 4, 4, 18, 4), dims=(96, 96, 192, 384, 512),
                         kinds=("C", "D", "D", "S", "S"), mlp_ratio=4),
    "lemevit_small_v2": dict(depths=(1, 2, 2, 8, 2), dims=(64, 64, 128, 256, 512),
                             kinds=("C", "D", "D", "S", "S"), mlp_ratio=3),
    "lemevit_tiny_v2": dict(depths=(2, 2, 2, 4, 2), dims=(96, 96, 192, 320, 384),
                            kinds=("C", "D2", "D2", "S", "S"), mlp_ratio=4),
    "vit_tiny": dict(depths=(2, 2, 4, 2), dims=(96, 192, 320, 384),
                     kinds=("S", "S", "S", "S"), mlp_ratio=4),
}
for _v in VARIANTS.values():
    _v.update(head_dim=32, meta_tokens=16, in_chans=3)
del _v

# SPEC table, millions of parameters with a 1000-class head (buffers excluded).
SPEC_PARAMS_M = {
    "lemevit_tiny": 8.64, "lemevit_small": 16.40, "lemevit_base": 53.10,
    "lemevit_small_v2": 14.37, "lemevit_tiny_v2": 13.86, "vit_tiny": 13.37,
}


def dca_scales(n, m, c, head_dim, policy):
    """(scale_x, scale_c) for a D/D2 block with N image tokens, M meta tokens
    and stage width C.  N comes from the static spatial shape."""
    if policy == "official":
        if n <= 1:
            # ln(1) = 0: the official code divides by zero here as well.
            raise ValueError("official D/D2 scale needs N > 1 image tokens, got N=%d" % n)
        return math.log(m) / math.log(n) / math.sqrt(c), 1.0 / math.sqrt(c)
    if policy == "head_dim":
        s = 1.0 / math.sqrt(head_dim)
        return s, s
    raise ValueError("unknown dca_scale policy %r (expected one of %s)" % (policy, DCA_SCALE_POLICIES))


def attend(q, k, v, head_dim, scale):
    """Multi-head softmax attention.  q: (B, Lq, C), k/v: (B, Lk, C); channel
    layout of each is (head, head_dim) contiguous, heads = C // head_dim."""
    b, lq, c = q.shape
    lk = k.shape[1]
    h = c // head_dim
    q = q.reshape(b, lq, h, head_dim).transpose(1, 2)
    k = k.reshape(b, lk, h, head_dim).transpose(1, 2)
    v = v.reshape(b, lk, h, head_dim).transpose(1, 2)
    a = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)
    return (a @ v).transpose(1, 2).reshape(b, lq, c)


class CrossAttention(nn.Module):
    """Kind C: meta tokens query the image tokens; only c is updated."""

    def __init__(self, dim, head_dim):
        super().__init__()
        self.head_dim = head_dim
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, c):
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.proj(attend(self.q(c), k, v, self.head_dim, self.head_dim ** -0.5))


class DualCrossAttention(nn.Module):
    """Kind D: x attends to c's k/v, c attends to x's k/v (separate qkv per set)."""

    def __init__(self, dim, head_dim, dca_scale):
        super().__init__()
        self.head_dim = head_dim
        self.dca_scale = dca_scale
        self.qkv1 = nn.Linear(dim, 3 * dim)
        self.qkv2 = nn.Linear(dim, 3 * dim)
        self.proj_x = nn.Linear(dim, dim)
        self.proj_c = nn.Linear(dim, dim)

    def forward(self, x, c):
        n, m, dim = x.shape[1], c.shape[1], x.shape[2]
        sx, sc = dca_scales(n, m, dim, self.head_dim, self.dca_scale)
        q1, k1, v1 = self.qkv1(x).chunk(3, dim=-1)
        q2, k2, v2 = self.qkv2(c).chunk(3, dim=-1)
        dx = self.proj_x(attend(q1, k2, v2, self.head_dim, sx))
        dc = self.proj_c(attend(q2, k1, v1, self.head_dim, sc))
        return dx, dc


class DualCrossAttentionV2(nn.Module):
    """Kind D2: shared logits roles.  qv1 on x -> (q, v1), kv2 on c -> (k, v2);
    x-branch softmax(q k^T) v2; c-branch queries k, keys q, values v1."""

    def __init__(self, dim, head_dim, dca_scale):
        super().__init__()
        self.head_dim = head_dim
        self.dca_scale = dca_scale
        self.qv1 = nn.Linear(dim, 2 * dim)
        self.kv2 = nn.Linear(dim, 2 * dim)
        self.proj_x = nn.Linear(dim, dim)
        self.proj_c = nn.Linear(dim, dim)

    def forward(self, x, c):
        n, m, dim = x.shape[1], c.shape[1], x.shape[2]
        sx, sc = dca_scales(n, m, dim, self.head_dim, self.dca_scale)
        q, v1 = self.qv1(x).chunk(2, dim=-1)
        k, v2 = self.kv2(c).chunk(2, dim=-1)
        dx = self.proj_x(attend(q, k, v2, self.head_dim, sx))
        dc = self.proj_c(attend(k, q, v1, self.head_dim, sc))
        return dx, dc


class SelfAttention(nn.Module):
    """Kind S: plain multi-head self-attention (applied to x and c separately)."""

    def __init__(self, dim, head_dim):
        super().__init__()
        self.head_dim = head_dim
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, t):
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        return self.proj(attend(q, k, v, self.head_dim, self.head_dim ** -0.5))


class Block(nn.Module):
    """Pre-norm LeMeViT block; norm1/norm2/mlp weights are shared by x and c."""

    def __init__(self, dim, kind, mlp_ratio, head_dim, dca_scale):
        super().__init__()
        self.kind = kind
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if kind == "C":
            self.attn = CrossAttention(dim, head_dim)
        elif kind == "D":
            self.attn = DualCrossAttention(dim, head_dim, dca_scale)
        elif kind == "D2":
            self.attn = DualCrossAttentionV2(dim, head_dim, dca_scale)
        elif kind == "S":
            self.attn = SelfAttention(dim, head_dim)
        else:
            raise ValueError("unknown block kind %r" % kind)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = mlp_ratio * dim
        # Index 1 is an Identity (the unused mlp_dwconv slot) so that the
        # official indices mlp.0 / mlp.3 line up.
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.Identity(), nn.GELU(),
                                 nn.Linear(hidden, dim))

    def forward(self, x, c):
        b, ch, h, w = x.shape
        x_in = x
        x = x + self.pos_embed(x)
        t = x.flatten(2).transpose(1, 2)  # (B, H*W, C), row-major H then W
        if self.kind == "C":
            c = c + self.attn(self.norm1(t), self.norm1(c))
            c = c + self.mlp(self.norm2(c))
            return x_in, c  # x leaves a C block unchanged (pos_embed dropped)
        if self.kind == "S":
            t = t + self.attn(self.norm1(t))
            t = t + self.mlp(self.norm2(t))
            c = c + self.attn(self.norm1(c))
            c = c + self.mlp(self.norm2(c))
        else:
            dx, dc = self.attn(self.norm1(t), self.norm1(c))
            t = t + dx
            t = t + self.mlp(self.norm2(t))
            c = c + dc
            c = c + self.mlp(self.norm2(c))
        return t.transpose(1, 2).reshape(b, ch, h, w), c


def _meta_downsample(cin, cout):
    return nn.Sequential(nn.Linear(cin, 4 * cin), nn.LayerNorm(4 * cin), nn.GELU(),
                         nn.Linear(4 * cin, cout), nn.LayerNorm(cout))


class LeMeViT(nn.Module):
    def __init__(self, depths, dims, kinds, mlp_ratio=4, head_dim=32, meta_tokens=16,
                 in_chans=3, num_classes=1000, dca_scale="official"):
        super().__init__()
        depths, dims, kinds = tuple(depths), tuple(dims), tuple(kinds)
        if not (len(depths) == len(dims) == len(kinds)) or not depths:
            raise ValueError("depths, dims and kinds must have the same non-zero length")
        if any(k not in KINDS for k in kinds):
            raise ValueError("kinds must be among %s, got %s" % (KINDS, kinds))
        if int(mlp_ratio) != mlp_ratio:
            raise ValueError("mlp_ratio must be an integer, got %r" % (mlp_ratio,))
        if any(d % head_dim for d in dims) or dims[0] % 2:
            raise ValueError("every dim must be a multiple of head_dim=%d and dims[0] even: %s"
                             % (head_dim, dims))
        for i in range(1, len(dims)):
            if kinds[i - 1] == "C" and dims[i] != dims[i - 1]:
                raise ValueError("stage %d follows a C stage (identity downsample) so its dim "
                                 "must equal %d, got %d" % (i, dims[i - 1], dims[i]))
        if dca_scale not in DCA_SCALE_POLICIES:
            raise ValueError("dca_scale must be one of %s" % (DCA_SCALE_POLICIES,))
        self.depths, self.dims, self.kinds = depths, dims, kinds
        self.mlp_ratio, self.head_dim = int(mlp_ratio), head_dim
        self.num_meta_tokens, self.in_chans, self.num_classes = meta_tokens, in_chans, num_classes
        self.dca_scale = dca_scale

        c0 = dims[0]
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_chans, c0 // 2, 3, stride=2, padding=1), nn.BatchNorm2d(c0 // 2),
            nn.GELU(),
            nn.Conv2d(c0 // 2, c0, 3, stride=2, padding=1), nn.BatchNorm2d(c0))])
        for i in range(1, len(dims)):
            if kinds[i - 1] == "C":
                self.downsample_layers.append(nn.Identity())
            else:
                self.downsample_layers.append(nn.Sequential(
                    nn.Conv2d(dims[i - 1], dims[i], 3, stride=2, padding=1),
                    nn.BatchNorm2d(dims[i])))
        self.meta_tokens = nn.Parameter(torch.randn(meta_tokens, c0))
        self.meta_token_downsample = nn.ModuleList(
            [_meta_downsample(c0 if i == 0 else dims[i - 1], dims[i]) for i in range(len(dims))])
        self.stages = nn.ModuleList([
            nn.ModuleList([Block(dims[i], kinds[i], self.mlp_ratio, head_dim, dca_scale)
                           for _ in range(depths[i])])
            for i in range(len(dims))])
        self.norm = nn.BatchNorm2d(dims[-1])
        self.norm_c = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def set_dca_scale(self, policy):
        """Switch the D/D2 scale policy in place (weights unchanged)."""
        if policy not in DCA_SCALE_POLICIES:
            raise ValueError("dca_scale must be one of %s" % (DCA_SCALE_POLICIES,))
        self.dca_scale = policy
        for m in self.modules():
            if isinstance(m, (DualCrossAttention, DualCrossAttentionV2)):
                m.dca_scale = policy
        return self

    def _trunk(self, x):
        c = self.meta_tokens.unsqueeze(0).expand(x.shape[0], -1, -1)
        feats = []
        for i, stage in enumerate(self.stages):
            x = self.downsample_layers[i](x)
            c = self.meta_token_downsample[i](c)
            for blk in stage:
                x, c = blk(x, c)
            feats.append(x)
        return feats, c

    def forward_features(self, x):
        """Per-stage image feature maps, each (N, C_i, H_i, W_i)."""
        return self._trunk(x)[0]

    def forward_head(self, x, c):
        x = self.norm(x).mean(dim=(2, 3))
        c = self.norm_c(c).mean(dim=1)
        return self.head(x + c)

    def forward(self, x):
        feats, c = self._trunk(x)
        return self.forward_head(feats[-1], c)


def arch_of(name):
    """Copy of a variant's architecture dict (depths, dims, kinds, ...)."""
    return dict(VARIANTS[name])


def build(name, num_classes=1000, dca_scale="official"):
    return LeMeViT(num_classes=num_classes, dca_scale=dca_scale, **VARIANTS[name])


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# Depthwise pos_embed std for test weights.  x <- x + dwconv(x) runs once per
# block on the residual stream; with N(0, 1/9) taps the stream variance about
# doubles per block (lemevit_base stage 3 reached std ~5e3 and swamped the
# attention/MLP contributions).  0.1 keeps a ~10%/block growth: the
# pos_embed path (and the C-block "x unchanged" rule) stays clearly visible
# while attention still dominates the output differences.
DW_STD = 0.1


@torch.no_grad()
def init_test_weights(model, seed):
    """Seeded random weights that make golden tests sensitive.

    Unlike training init (0.02 std), Linear weights are N(0, 1/fan_in) so that
    attention logits are O(1) and the D/D2 scale policy visibly changes the
    output; norms and BN statistics are perturbed away from identity so that
    affine and running-stat handling matter, and two LayerNorm inputs are
    made tiny so that each eps (1e-6 blocks, 1e-5 elsewhere) matters.
    """
    g = torch.Generator().manual_seed(seed)

    def normal_(t, std, mean=0.0):
        t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64) * std + mean)

    def uniform_(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g, dtype=torch.float64) * (hi - lo) + lo)

    for m in model.modules():
        if isinstance(m, nn.Linear):
            normal_(m.weight, m.in_features ** -0.5)
            normal_(m.bias, 0.05)
        elif isinstance(m, nn.Conv2d):
            if m.groups == m.in_channels and m.groups > 1:
                normal_(m.weight, DW_STD)
            else:
                fan_in = m.weight[0].numel()
                normal_(m.weight, fan_in ** -0.5)
            normal_(m.bias, 0.05)
        elif isinstance(m, nn.LayerNorm):
            normal_(m.weight, 0.1, 1.0)
            normal_(m.bias, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            uniform_(m.weight, 0.5, 1.5)
            normal_(m.bias, 0.1)
            normal_(m.running_mean, 0.1)
            uniform_(m.running_var, 0.5, 1.5)
    normal_(model.meta_tokens, 1.0)
    # LayerNorm eps probes.  With O(1) inputs, swapping 1e-5 and 1e-6 moves
    # the logits by only ~5e-6 relative, close to float32 noise.  Shrinking
    # the input of one LayerNorm of each kind to variance ~1e-4 makes eps
    # matter: (a) the Linear feeding each meta_token_downsample output LN
    # (eps 1e-5), (b) the stem's last BatchNorm, so that stage-0/1 x entering
    # the first blocks' norm1 (eps 1e-6) is tiny.  An eps mix-up then moves
    # the logits by ~1e-3..1e-1 while float32 rounding stays ~4e-7.
    for mtd in model.meta_token_downsample:
        mtd[3].weight.mul_(0.01)
        mtd[3].bias.mul_(0.01)
    stem_bn = model.downsample_layers[0][4]
    stem_bn.weight.mul_(0.01)
    stem_bn.bias.mul_(0.01)
    return model
