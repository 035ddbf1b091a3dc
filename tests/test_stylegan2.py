"""StyleGAN2 backbone, super-resolution heads and their ops (small configs, CPU)."""

import math

import pytest
import torch
import torch.nn.functional as F

from core.generator import ops
from core.generator.stylegan2 import Generator, MappingNetwork, SynthesisNetwork, StyleGAN2Backbone
from core.generator.superresolution import (
    SuperresolutionHybrid2X,
    SuperresolutionHybrid8XDC,
    SynthesisBlockNoUp,
)

SMALL = dict(z_dim=8, c_dim=3, w_dim=8, img_resolution=16, img_channels=6, channel_base=128,
             channel_max=8, num_fp16_res=0, conv_clamp=None, mapping_kwargs={"num_layers": 2})


def make_generator(seed=0, **overrides):
    torch.manual_seed(seed)
    G = Generator(**dict(SMALL, **overrides)).eval()
    with torch.no_grad():  # non-zero noise strengths and w_avg, so that modes and truncation show
        for name, p in list(G.named_parameters()) + list(G.named_buffers()):
            if name.endswith("noise_strength"):
                p.fill_(0.5)
            elif name.endswith("w_avg"):
                p.copy_(torch.randn_like(p))
    return G


def inputs(G, batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, G.z_dim, generator=gen), torch.randn(batch, G.c_dim, generator=gen)


# ---------------------------------------------------------------------------
# state_dict names (these must equal EG3D's for official pickles to load)

# Key list of EG3D's own networks_stylegan2.Generator(8, 3, 8, 8, 3, channel_base=64, channel_max=8,
# mapping_kwargs={'num_layers': 2}), in EG3D's order.
EG3D_KEYS_RES8 = """
synthesis.b4.const synthesis.b4.resample_filter synthesis.b4.conv1.weight
synthesis.b4.conv1.noise_strength synthesis.b4.conv1.bias synthesis.b4.conv1.resample_filter
synthesis.b4.conv1.noise_const synthesis.b4.conv1.affine.weight synthesis.b4.conv1.affine.bias
synthesis.b4.torgb.weight synthesis.b4.torgb.bias synthesis.b4.torgb.affine.weight
synthesis.b4.torgb.affine.bias synthesis.b8.resample_filter synthesis.b8.conv0.weight
synthesis.b8.conv0.noise_strength synthesis.b8.conv0.bias synthesis.b8.conv0.resample_filter
synthesis.b8.conv0.noise_const synthesis.b8.conv0.affine.weight synthesis.b8.conv0.affine.bias
synthesis.b8.conv1.weight synthesis.b8.conv1.noise_strength synthesis.b8.conv1.bias
synthesis.b8.conv1.resample_filter synthesis.b8.conv1.noise_const synthesis.b8.conv1.affine.weight
synthesis.b8.conv1.affine.bias synthesis.b8.torgb.weight synthesis.b8.torgb.bias
synthesis.b8.torgb.affine.weight synthesis.b8.torgb.affine.bias mapping.w_avg mapping.embed.weight
mapping.embed.bias mapping.fc0.weight mapping.fc0.bias mapping.fc1.weight mapping.fc1.bias
""".split()


def test_state_dict_keys_match_eg3d():
    G = Generator(8, 3, 8, 8, 3, channel_base=64, channel_max=8, mapping_kwargs={"num_layers": 2})
    sd = G.state_dict()
    assert list(sd) == EG3D_KEYS_RES8
    assert sd["mapping.fc0.weight"].shape == (8, 16)  # z (8) concatenated with the c embedding (8)
    assert sd["synthesis.b8.conv0.noise_const"].shape == (8, 8)
    assert sd["synthesis.b8.torgb.weight"].shape == (3, 8, 1, 1)
    assert sd["synthesis.b4.const"].shape == (8, 4, 4)
    # Loading into a fresh instance is strict and exact.
    other = Generator(8, 3, 8, 8, 3, channel_base=64, channel_max=8, mapping_kwargs={"num_layers": 2})
    other.load_state_dict(sd, strict=True)


def test_state_dict_keys_of_variants():
    keys = set(make_generator(architecture="resnet").state_dict())
    assert "synthesis.b8.skip.weight" in keys and "synthesis.b8.skip.bias" not in keys
    assert "synthesis.b8.torgb.weight" not in keys and "synthesis.b16.torgb.weight" in keys
    keys = set(make_generator(c_dim=0).state_dict())
    assert not any(k.startswith("mapping.embed") for k in keys)
    assert {"mapping.fc0.weight", "mapping.fc1.weight", "mapping.w_avg"} <= keys
    assert StyleGAN2Backbone is Generator


def test_superresolution_state_dict_keys():
    sr2 = SuperresolutionHybrid2X(channels=32, img_resolution=128, sr_num_fp16_res=4, sr_antialias=True)
    keys = list(sr2.state_dict())
    assert keys[0] == "resample_filter"
    assert isinstance(sr2.block0, SynthesisBlockNoUp)
    assert sr2.block0.conv0.weight.shape == (128, 32, 3, 3) and sr2.block0.conv0.up == 1
    assert sr2.block1.conv0.up == 2
    assert "block1.torgb.affine.weight" in keys and "block0.conv1.noise_const" in keys
    assert sr2.block0.conv0.conv_clamp == 256  # fp16 setting turns clamping on, on any device
    dc = SuperresolutionHybrid8XDC(channels=32, img_resolution=512, sr_num_fp16_res=0, sr_antialias=True)
    dc_keys = set(dc.state_dict())
    assert "resample_filter" not in dc_keys  # EG3D's 8XDC head has no top-level filter buffer
    assert dc.block0.conv0.weight.shape == (256, 32, 3, 3) and dc.block1.conv1.weight.shape == (128, 128, 3, 3)
    with pytest.raises(ValueError):
        SuperresolutionHybrid2X(channels=32, img_resolution=256, sr_num_fp16_res=0, sr_antialias=True)


# ---------------------------------------------------------------------------
# Generator behaviour


def test_shapes_and_num_ws():
    G = make_generator()
    z, c = inputs(G)
    ws = G.mapping(z, c)
    assert G.num_ws == 2 * int(math.log2(16)) - 2 == ws.shape[1]
    assert ws.shape == (2, G.num_ws, 8)
    assert G(z, c, noise_mode="const").shape == (2, 6, 16, 16)
    for arch in ("orig", "resnet"):
        H = make_generator(architecture=arch)
        assert H(z, c, noise_mode="const").shape == (2, 6, 16, 16)


def test_noise_modes():
    G = make_generator()
    z, c = inputs(G)
    ws = G.mapping(z, c)
    const = G.synthesis(ws, noise_mode="const")
    assert torch.equal(const, G.synthesis(ws, noise_mode="const"))
    assert torch.equal(G.synthesis(ws, noise_mode="none"), G.synthesis(ws, noise_mode="none"))
    assert not torch.allclose(const, G.synthesis(ws, noise_mode="none"))
    assert not torch.allclose(G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random"))
    with pytest.raises(ValueError):
        G.synthesis(ws, noise_mode="bogus")


def test_truncation():
    G = make_generator()
    z, c = inputs(G)
    w_avg = G.mapping.w_avg
    assert torch.equal(G.mapping(z, c, truncation_psi=0), w_avg.expand(2, G.num_ws, -1))
    w = G.mapping(z, c)
    half = G.mapping(z, c, truncation_psi=0.5)
    assert torch.allclose(half, w_avg + 0.5 * (w - w_avg), atol=1e-6)
    cut = G.mapping(z, c, truncation_psi=0, truncation_cutoff=2)
    assert torch.equal(cut[:, :2], w_avg.expand(2, 2, -1))
    assert torch.equal(cut[:, 2:], w[:, 2:])
    # truncation_psi=0 makes every sample the same image
    img = G(z, c, truncation_psi=0, noise_mode="const")
    assert torch.allclose(img[0], img[1], atol=1e-6)


def test_update_emas_moves_w_avg():
    mapping = MappingNetwork(z_dim=8, c_dim=0, w_dim=8, num_ws=3, num_layers=2)
    z = torch.randn(4, 8)
    w = mapping(z, None)[:, 0]
    mapping(z, None, update_emas=True)
    assert torch.allclose(mapping.w_avg, (1 - 0.998) * w.mean(0), atol=1e-7)


def test_block_features():
    G = make_generator()
    z, c = inputs(G)
    ws = G.mapping(z, c)
    img, feats = G.synthesis(ws, noise_mode="const", return_block_features=True)
    assert torch.equal(img, G.synthesis(ws, noise_mode="const"))
    assert list(feats) == [4, 8, 16]
    for res, x in feats.items():
        assert x.shape == (2, 8, res, res) and x.dtype == torch.float32
    # the Generator forwards the option too
    img2, feats2 = G(z, c, noise_mode="const", return_block_features=True)
    assert torch.equal(img2, img) and torch.equal(feats2[16], feats[16])


def test_fused_and_unfused_modconv_agree():
    G = make_generator(fused_modconv_default="inference_only")
    z, c = inputs(G)
    ws = G.mapping(z, c)
    fused = G.synthesis(ws, noise_mode="const")
    G.train()  # 'inference_only' -> unfused in training mode
    unfused = G.synthesis(ws, noise_mode="const")
    assert torch.allclose(fused, unfused, atol=1e-5)
    assert torch.allclose(G.synthesis(ws, noise_mode="const", fused_modconv=True), fused, atol=1e-6)


def test_gradients_reach_every_parameter():
    G = make_generator().train()
    z, c = inputs(G)
    G(z, c, noise_mode="const").square().mean().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None]
    assert not missing


def test_superresolution_forward():
    torch.manual_seed(0)
    sr = SuperresolutionHybrid2X(channels=32, img_resolution=128, sr_num_fp16_res=0, sr_antialias=True,
                                 fused_modconv_default="inference_only").eval()
    feat = torch.randn(1, 32, 32, 32)  # smaller than the 64px input: resized first
    rgb = feat[:, :3]
    before = feat.clone()
    ws = torch.randn(1, 5, 512)
    out = sr(rgb, feat, ws, noise_mode="none")
    assert out.shape == (1, 3, 128, 128)
    assert torch.equal(feat, before)  # inputs are never modified in place
    out64 = sr(torch.randn(1, 3, 64, 64), torch.randn(1, 32, 64, 64), ws, noise_mode="const")
    assert out64.shape == (1, 3, 128, 128)


# ---------------------------------------------------------------------------
# ops


def test_setup_filter():
    f = ops.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    assert torch.allclose(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    assert ops.setup_filter([1] * 8).shape == (8,)  # long 1-D filters stay separable
    assert torch.allclose(ops.setup_filter([1, 1], gain=4).sum(), torch.tensor(4.0))


def test_upfirdn2d_hand_computed():
    x = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    f = torch.tensor([[1.0, 2.0]])
    # True convolution with left zero padding: y[n] = x[n] + 2 x[n-1].
    assert ops.upfirdn2d(x, f, padding=[1, 0, 0, 0]).flatten().tolist() == [1.0, 4.0, 7.0]
    # Correlation: y[n] = x[n-1] + 2 x[n].
    assert ops.upfirdn2d(x, f, padding=[1, 0, 0, 0], flip_filter=True).flatten().tolist() == [2.0, 5.0, 8.0]
    # Zero insertion with the identity filter, then cropping and decimation.
    up = ops.upfirdn2d(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), None, up=2)
    assert up[0, 0].tolist() == [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]
    assert ops.upfirdn2d(x, None, padding=[-1, 0, 0, 0]).flatten().tolist() == [2.0, 3.0]
    assert ops.upfirdn2d(x, None, down=2).flatten().tolist() == [1.0, 3.0]
    assert ops.upfirdn2d(x, f, gain=2, padding=[1, 0, 0, 0]).flatten().tolist() == [2.0, 8.0, 14.0]


def test_box_filter_resampling():
    x = torch.randn(2, 3, 6, 8)
    box = ops.setup_filter([1, 1])
    nearest = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.allclose(ops.upsample2d(x, box), nearest, atol=1e-6)
    assert torch.allclose(ops.downsample2d(x, box), F.avg_pool2d(x, 2), atol=1e-6)
    assert ops.filter2d(x, ops.setup_filter([1, 3, 3, 1])).shape == x.shape
    smooth = ops.upsample2d(x, ops.setup_filter([1, 3, 3, 1]))
    assert smooth.shape == (2, 3, 12, 16)
    assert torch.allclose(smooth.mean(), x.mean(), atol=0.05)  # DC roughly kept (zero border aside)


def test_conv2d_resample_paths_agree_with_plain_composition():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 9)
    f = ops.setup_filter([1, 3, 3, 1])
    for groups in (1, 2):
        w = torch.randn(6, 4 // groups, 3, 3)
        for flip in (True, False):
            kernel = w if flip else w.flip([2, 3])
            # up=2: transposed-conv path == FIR upsample then an ordinary conv
            fast = ops.conv2d_resample(x, w, f=f, up=2, padding=1, groups=groups, flip_weight=flip)
            slow = F.conv2d(ops.upsample2d(x, f, padding=1), kernel, groups=groups)
            assert fast.shape == (2, 6, 14, 18)
            assert torch.allclose(fast, slow, atol=1e-5)
            # down=2: strided path == conv then FIR-filter and decimate, all padding applied up front
            # (1 for the kernel + 1 on each side so the 4-tap filter fits).
            fast = ops.conv2d_resample(x, w, f=f, down=2, padding=1, groups=groups, flip_weight=flip)
            slow = ops.upfirdn2d(F.conv2d(F.pad(x, [2, 2, 2, 2]), kernel, groups=groups), f, down=2)
            assert torch.allclose(fast, slow, atol=1e-5)
    w1 = torch.randn(6, 4, 1, 1)
    assert torch.allclose(ops.conv2d_resample(x, w1, f=f, up=2), ops.upsample2d(F.conv2d(x, w1), f), atol=1e-5)


def test_modulated_conv2d_matches_explicit_per_sample_kernels():
    torch.manual_seed(0)
    x, w, s = torch.randn(2, 4, 5, 5), torch.randn(3, 4, 3, 3), torch.randn(2, 4)
    expected = []
    for n in range(2):
        k = w * s[n].reshape(1, -1, 1, 1)
        k = k / k.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        expected.append(F.conv2d(x[n: n + 1], k, padding=1))
    expected = torch.cat(expected)
    for fused in (True, False):
        out = ops.modulated_conv2d(x, w, s, padding=1, fused_modconv=fused)
        assert torch.allclose(out, expected, atol=1e-5)


def test_bias_act():
    x = torch.tensor([[-2.0, 3.0]])
    b = torch.tensor([1.0, -1.0])
    assert torch.allclose(ops.bias_act(x, b, act="lrelu"), torch.tensor([[-0.2, 2.0]]) * math.sqrt(2))
    assert torch.allclose(ops.bias_act(x, b, act="relu", gain=1, clamp=1.5), torch.tensor([[0.0, 1.5]]))
    assert torch.equal(ops.bias_act(x), x)
    assert torch.allclose(ops.bias_act(x, act="tanh"), torch.tanh(x))
    assert ops.ACTIVATIONS["swish"].def_gain == math.sqrt(2)
