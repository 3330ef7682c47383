"""ASFormer (hhjax.models.segmenters.asformer): the local attention window against a
hand-worked table, masking, the registry, the parameter count and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax import losses
from hhjax.models import segmenters
from hhjax.models.segmenters import asformer

# Key windows for T = 12, worked out by hand from the authors' rule: the block starting
# at frame s (block length bl) attends to frames [s - bl//2, s - bl//2 + width) with
# width = bl for bl = 1 and 2 bl - 1 otherwise, clipped to [0, 12).
# Each entry: (query frames, key frames).
HAND_WINDOWS = {
    1: [([t], [t]) for t in range(12)],
    2: [([0, 1], [0, 1]),                    # [-1, 2)
        ([2, 3], [1, 2, 3]),                 # [1, 4)
        ([4, 5], [3, 4, 5]),
        ([6, 7], [5, 6, 7]),
        ([8, 9], [7, 8, 9]),
        ([10, 11], [9, 10, 11])],
    4: [([0, 1, 2, 3], list(range(0, 5))),   # [-2, 5)
        ([4, 5, 6, 7], list(range(2, 9))),   # [2, 9)
        ([8, 9, 10, 11], list(range(6, 12)))],   # [6, 13)
    8: [(list(range(0, 8)), list(range(0, 11))),   # [-4, 11): frame 11 is outside
        ([8, 9, 10, 11], list(range(4, 12)))],     # [4, 19)
    16: [(list(range(12)), list(range(12)))],      # [-8, 23)
}


def _naive_window_attention(q, k, v, mask, block):
  """For every valid query: softmax over exactly the valid keys of its hand window."""
  b, t, dk = q.shape
  out = np.zeros((b, t, v.shape[-1]))
  for queries, keys in HAND_WINDOWS[block]:
    for i in range(b):
      for qt in queries:
        if not mask[i, qt]:
          continue
        ks = [j for j in keys if mask[i, j]]
        s = np.array([q[i, qt] @ k[i, j] for j in ks]) / np.sqrt(dk)
        w = np.exp(s - s.max())
        w /= w.sum()
        out[i, qt] = sum(wj * v[i, j] for wj, j in zip(w, ks))
  return out


def _qkv(seed, b=2, t=12, dk=3, dv=2):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(b, t, dk)), rng.normal(size=(b, t, dk)),
          rng.normal(size=(b, t, dv)))


@pytest.mark.parametrize("block", sorted(HAND_WINDOWS))
def test_blocked_attention_matches_naive_window_softmax(block):
  q, k, v = _qkv(block)
  mask = np.ones((2, 12))
  mask[1, 9:] = 0                                 # second video: 9 valid frames
  got = asformer.local_attention(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32),
                                 jnp.asarray(v, jnp.float32), jnp.asarray(mask), block)
  np.testing.assert_allclose(got, _naive_window_attention(q, k, v, mask, block),
                             rtol=1e-5, atol=1e-6)


def test_window_of_block_hand_values():
  assert [asformer.window_of_block(bl) for bl in (1, 2, 4, 8, 512)] == [
      (0, 1), (1, 3), (2, 7), (4, 15), (256, 1023)]
  with pytest.raises(ValueError, match="block length"):
    asformer.window_of_block(0)


def test_only_keys_inside_the_window_matter():
  # Block length 4: query frame 5 (block [4, 8)) sees key frames 2..8 only.
  q, k, v = (jnp.asarray(a, jnp.float32) for a in _qkv(0, b=1))
  mask = jnp.ones((1, 12))
  base = asformer.local_attention(q, k, v, mask, 4)[0, 5]

  def perturbed(frame, mask=mask):
    k2 = k.at[0, frame].add(3.0)
    v2 = v.at[0, frame].add(5.0)
    return asformer.local_attention(q, k2, v2, mask, 4)[0, 5]

  for outside in (0, 1, 9, 10, 11):
    np.testing.assert_array_equal(perturbed(outside), base)
  for inside in (2, 5, 8):
    assert np.abs(np.asarray(perturbed(inside) - base)).max() > 1e-3
  # A padded key inside the window has no effect either.
  pad8 = mask.at[0, 8].set(0.0)
  np.testing.assert_array_equal(perturbed(8, pad8),
                                asformer.local_attention(q, k, v, pad8, 4)[0, 5])


def test_masked_instance_norm_uses_valid_frames_only():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 10, 4)) * 3 + 1
  mask = np.ones((2, 10))
  mask[0, 6:] = 0
  got = np.asarray(asformer.masked_instance_norm(jnp.asarray(x, jnp.float32),
                                                 jnp.asarray(mask)))
  for i, n in ((0, 6), (1, 10)):
    xv = x[i, :n]
    ref = (xv - xv.mean(0)) / np.sqrt(xv.var(0) + 1e-5)
    np.testing.assert_allclose(got[i, :n], ref, rtol=1e-4, atol=1e-5)
  assert np.all(got[0, 6:] == 0)


def _tiny(**kw):
  cfg = dict(num_classes=5, num_layers=6, channels=8, num_decoders=2, dropout_rate=0.0,
             input_dropout_rate=0.0)
  cfg.update(kw)
  return asformer.ASFormer(**cfg)


def test_padded_video_gives_same_outputs_on_valid_frames():
  rng = np.random.default_rng(0)
  model = _tiny(num_layers=5, num_decoders=1)   # windows up to 31 frames
  lengths, t_pad, d = (37, 23), 50, 6
  videos = [rng.normal(size=(1, n, d)).astype(np.float32) for n in lengths]
  params = model.init(jax.random.key(0), videos[0], np.ones((1, lengths[0])))
  xp = rng.normal(size=(2, t_pad, d)).astype(np.float32) * 50      # garbage padding
  maskp = np.zeros((2, t_pad), np.float32)
  for i, (n, x) in enumerate(zip(lengths, videos)):
    xp[i, :n] = x[0]
    maskp[i, :n] = 1
  apply = jax.jit(model.apply)
  outp = apply(params, xp, maskp)
  assert np.all(np.asarray(outp["logits"])[:, 1, lengths[1]:] == 0)
  for i, (n, x) in enumerate(zip(lengths, videos)):
    out = apply(params, x, np.ones((1, n)))
    np.testing.assert_allclose(outp["logits"][:, i, :n], out["logits"][:, 0],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outp["features"][i, :n], out["features"][0],
                               rtol=1e-5, atol=1e-5)


def test_registry_builds_with_its_own_section_overriding():
  cfg = {"num_classes": 4, "num_stages": 4, "num_layers": 10, "channels": 64,
         "dropout_rate": 0.5, "input_dropout_rate": 0.0,
         "asformer": {"num_layers": 3, "channels": 8, "num_decoders": 2, "r1": 2,
                      "r2": 4}}
  model = segmenters.build("asformer", cfg)
  assert isinstance(model, asformer.ASFormer)
  assert (model.num_classes, model.num_layers, model.channels, model.num_decoders,
          model.r1, model.r2, model.input_dropout_rate) == (4, 3, 8, 2, 2, 4, 0.0)
  x, mask = jnp.ones((2, 20, 6)), jnp.ones((2, 20))
  variables = model.init(jax.random.key(0), x, mask)
  out = model.apply(variables, x, mask)
  assert out["logits"].shape == (3, 2, 20, 4)      # encoder + 2 decoders
  assert out["features"].shape == (2, 20, 8)
  att = variables["params"]["decoder_1"]["block_2"]["attention"]
  assert att["query"]["kernel"].shape == (8, 4)    # channels // r1
  assert att["value"]["kernel"].shape == (8, 2)    # channels // r2
  assert att["conv_out"]["kernel"].shape == (2, 8)
  assert set(variables["params"]) == {"encoder", "decoder_0", "decoder_1"}
  with pytest.raises(ValueError, match="config.model.asformer has fields"):
    segmenters.build("asformer", {"asformer": {"heads": 2}})


def test_bad_reduction_ratio_is_named():
  model = _tiny(r1=3)
  with pytest.raises(ValueError, match=r"config\.model\.asformer\.r1"):
    model.init(jax.random.key(0), jnp.ones((1, 8, 6)), jnp.ones((1, 8)))


def test_parameter_count_at_default_sizes():
  # Hand count from the authors' code (model.py; 64 channels, r1 = r2 = 2, 10 blocks,
  # 3 decoders), for 2048-d features and 19 classes (50Salads):
  #   block: dilated conv 64*64*3 + 64 = 12352; Q, K, V 1x1 (64 -> 32) 3 * 2080 = 6240;
  #          attention conv_out (32 -> 64) 2112; conv_1x1 4160           -> 24864
  #   encoder: conv_in 2048*64 + 64 = 131136, 10 blocks 248640, classifier 64*19 + 19
  #            = 1235                                                    -> 381011
  #   decoder: conv_in 19*64 + 64 = 1280, 10 blocks 248640, classifier 1235 -> 251155
  #   total: 381011 + 3 * 251155 = 1134476 (the paper's ~1.13M).
  model = asformer.ASFormer(num_classes=19)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 16, 2048)),
                          jnp.ones((1, 16)))
  assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes)) == 1134476


def test_shared_loss_sends_gradients_to_every_parameter():
  rng = np.random.default_rng(1)
  model = _tiny(num_layers=3, dropout_rate=0.5, input_dropout_rate=0.3)
  x = jnp.asarray(rng.normal(size=(2, 24, 6)), jnp.float32)
  mask = jnp.ones((2, 24)).at[1, 17:].set(0)
  labels = jnp.asarray(rng.integers(0, 5, size=(2, 24)), jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), x, mask)["params"]

  def loss(p):
    out = model.apply({"params": p}, x, mask, train=True,
                      rngs={"dropout": jax.random.key(2)})
    ce, smooth = losses.stage_losses(out["logits"], labels, mask)
    return ce.sum() + 0.15 * smooth.sum()

  grads = jax.jit(jax.grad(loss))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    name = jax.tree_util.keystr(path)
    g = np.asarray(g)
    assert np.all(np.isfinite(g)), name
    if "block_0" in name and ("'query'" in name or "'key'" in name):
      # Block length 1: each frame attends to itself alone, so the softmax weight is
      # always 1 and Q, K get no gradient (as in the original).
      assert np.all(g == 0), name
    else:
      assert np.abs(g).max() > 0, name
