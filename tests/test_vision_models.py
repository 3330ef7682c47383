"""Frame-level vision models: ConvLSTM, CNN-LSTM, hand localiser, hand-guided TSM."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax import handpose
from hhjax.models.vision import cnn_lstm, convlstm, hand_guided, hand_localiser


def _init(model, *args, **kwargs):
  """`model.init` under jit: one compilation instead of one per initialiser."""
  return jax.jit(model.init)(jax.random.key(0), *args, **kwargs)


def _has_module(name):
  try:
    return importlib.util.find_spec(name) is not None
  except ImportError:
    return False


# ---------------------------------------------------------------------------- ConvLSTM


def _np_conv_same(x, kernel, bias):
  """Cross-correlation with zero 'SAME' padding, written as explicit loops."""
  b, h, w, _ = x.shape
  kh, kw, cin, cout = kernel.shape
  xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  out = np.zeros((b, h, w, cout))
  for n in range(b):
    for y in range(h):
      for xx in range(w):
        for o in range(cout):
          acc = bias[o]
          for i in range(kh):
            for j in range(kw):
              for c in range(cin):
                acc += xp[n, y + i, xx + j, c] * kernel[i, j, c, o]
          out[n, y, xx, o] = acc
  return out


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize("kernel_size", [(3, 3), (1, 3)])
def test_convlstm_cell_matches_numpy_step(kernel_size):
  rng = np.random.default_rng(0)
  f = 3
  x = rng.normal(size=(2, 4, 5, 2)).astype(np.float32)
  c0 = rng.normal(size=(2, 4, 5, f)).astype(np.float32)
  h0 = rng.normal(size=(2, 4, 5, f)).astype(np.float32)
  cell = convlstm.ConvLSTMCell(f, kernel_size)
  params = _init(cell, (c0, h0), x)
  (c1, h1), out = cell.apply(params, (c0, h0), x)

  kernel = np.asarray(params["params"]["conv"]["kernel"], np.float64)
  bias = np.asarray(params["params"]["conv"]["bias"], np.float64)
  z = _np_conv_same(np.concatenate([x, h0], -1).astype(np.float64), kernel, bias)
  zi, zf, zo, zg = (z[..., k * f:(k + 1) * f] for k in range(4))   # i, f, o, g
  c_ref = _sigmoid(zf) * c0 + _sigmoid(zi) * np.tanh(zg)
  h_ref = _sigmoid(zo) * np.tanh(c_ref)
  np.testing.assert_allclose(c1, c_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(h1, h_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out, h_ref, rtol=1e-5, atol=1e-5)


def test_convlstm_padding_frames_do_not_change_output():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 4, 3, 3, 2)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.float32)
  garbage = x.copy()
  garbage[1, 2:] = 100.0 * rng.normal(size=garbage[1, 2:].shape)
  layer = convlstm.ConvLSTM(3)
  params = _init(layer, x, mask)
  apply = jax.jit(layer.apply)
  last = apply(params, garbage, mask)
  alone = apply(params, x[1:, :2], mask[1:, :2])          # the short clip, unpadded
  np.testing.assert_allclose(last[1], alone[0], rtol=1e-5, atol=1e-6)
  # Without the mask the padding would change the result.
  assert not np.allclose(apply(params, garbage, np.ones_like(mask))[1], alone[0],
                         atol=1e-3)

  seq = jax.jit(convlstm.ConvLSTM(3, return_sequences=True).apply)(params, garbage,
                                                                   mask)
  assert seq.shape == (2, 4, 3, 3, 3)
  np.testing.assert_allclose(seq[1, 1], alone[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(seq[1, 2:], 0.0)
  np.testing.assert_allclose(seq[0, 3], last[0], rtol=1e-6)

  clf = convlstm.ConvLSTMClassifier(num_classes=4)
  cparams = _init(clf, x, mask)
  assert cparams["params"]["classifier"]["kernel"].shape == (3 * 3 * 8, 4)
  capply = jax.jit(clf.apply)
  np.testing.assert_allclose(capply(cparams, garbage, mask)[1],
                             capply(cparams, x[1:, :2], mask[1:, :2])[0],
                             rtol=1e-5, atol=1e-5)


def test_convlstm_rejects_bad_arguments():
  x = jnp.zeros((1, 2, 3, 3, 1))
  with pytest.raises(ValueError, match="kernel_size"):
    convlstm.ConvLSTM(2, (2, 3)).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="mask shape"):
    convlstm.ConvLSTM(2).init(jax.random.key(0), x, jnp.ones((1, 3)))


# ---------------------------------------------------------------------------- CNN-LSTM


def test_cnn_lstm_uses_last_valid_output():
  rng = np.random.default_rng(2)
  x = rng.uniform(size=(2, 4, 8, 8, 3)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.float32)
  garbage = x.copy()
  garbage[1, 2:] = rng.uniform(size=garbage[1, 2:].shape)
  model = cnn_lstm.CNNLSTM(num_classes=5, lstm_hidden=8, embed=8, head_hidden=8)
  variables = _init(model, x, mask)
  apply = jax.jit(model.apply)
  logits = apply(variables, garbage, mask)
  alone = apply(variables, x[1:, :2], mask[1:, :2])
  assert logits.shape == (2, 5)
  np.testing.assert_allclose(logits[1], alone[0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(apply(variables, garbage, np.ones_like(mask))[1], alone[0],
                         atol=1e-4)


def test_cnn_lstm_rejects_unknown_cnn():
  with pytest.raises(ValueError, match="CNNLSTM.cnn='vgg'"):
    cnn_lstm.CNNLSTM(cnn="vgg").init(jax.random.key(0), jnp.zeros((1, 2, 8, 8, 3)))


def test_clip_frame_indices_examples():
  idx, mask = cnn_lstm.clip_frame_indices(10, stride=4, length=4)
  np.testing.assert_array_equal(idx, [0, 4, 8, 9])
  np.testing.assert_array_equal(mask, [True, True, True, False])
  idx, mask = cnn_lstm.clip_frame_indices(200, start=3)            # report's default
  np.testing.assert_array_equal(idx, 3 + 4 * np.arange(32))
  assert mask.all()
  # Short videos: the stride drops to the largest that fits 32 frames.
  idx, mask = cnn_lstm.clip_frame_indices(100, adapt_stride=True)
  np.testing.assert_array_equal(idx, 3 * np.arange(32))             # 3 * 31 = 93 < 100
  assert mask.all()
  idx, mask = cnn_lstm.clip_frame_indices(20, adapt_stride=True)
  np.testing.assert_array_equal(idx, np.minimum(np.arange(32), 19))
  np.testing.assert_array_equal(mask, np.arange(32) < 20)
  jitted = jax.jit(lambda n: cnn_lstm.clip_frame_indices(n, adapt_stride=True))
  for n in (20, 100, 500):
    for got, want in zip(jitted(jnp.int32(n)),
                         cnn_lstm.clip_frame_indices(n, adapt_stride=True)):
      np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match="stride"):
    cnn_lstm.clip_frame_indices(10, stride=0)


# ---------------------------------------------------------------------- hand localiser


def test_localiser_loss_hand_example():
  target = jnp.array([[1, 0.2, 0.4, 0, 0, 0], [0, 0, 0, 1, 0.5, 0.5]])
  pred = jnp.array([[0.8, 0.3, 0.1, 0.6, 0.9, 0.9], [0.1, 0.7, 0.7, 0.5, 0.5, 0.7]])
  # Image 0: 0.1 (0.2^2 + 0.6^2) + (0.1^2 + 0.3^2) = 0.04 + 0.1 = 0.14.
  # Image 1: 0.1 (0.1^2 + 0.5^2) + (0^2 + 0.2^2) = 0.026 + 0.04 = 0.066.
  loss = hand_localiser.localiser_loss(pred, target)
  np.testing.assert_allclose(loss, (0.14 + 0.066) / 2, rtol=1e-6)
  np.testing.assert_allclose(hand_localiser.localiser_loss(pred, target, lam=0.0),
                             (0.1 + 0.04) / 2, rtol=1e-6)
  grad = jax.grad(hand_localiser.localiser_loss)(pred, target)
  np.testing.assert_array_equal(grad[0, 4:6], 0.0)     # absent hand: no position term
  np.testing.assert_array_equal(grad[1, 1:3], 0.0)
  np.testing.assert_allclose(grad[0, 1], 2 * (0.3 - 0.2) / 2, rtol=1e-5)
  with pytest.raises(ValueError, match=r"\(N, 6\)"):
    hand_localiser.localiser_loss(pred[:, :5], target[:, :5])


def test_f1_at_threshold_hand_example():
  target = np.array([[1, 0.5, 0.5, 0, 0, 0],
                     [1, 0.2, 0.2, 1, 0.8, 0.8],
                     [0, 0, 0, 1, 0.3, 0.3]])
  pred = np.array([[0.9, 0.55, 0.5, 0.7, 0.1, 0.1],     # TP (0.05 away); FP (absent)
                   [0.3, 0.2, 0.2, 0.9, 0.8, 0.5],      # FN (missed); FP (0.3 away)
                   [0.2, 0.9, 0.9, 0.6, 0.3, 0.32]])    # TN; TP (0.02 away)
  assert hand_localiser.localisation_counts(pred, target, 0.1) == (2, 2, 1)
  np.testing.assert_allclose(hand_localiser.f1_at_threshold(pred, target, 0.1),
                             100 * 4 / 7)
  np.testing.assert_allclose(
      hand_localiser.f1_at_threshold(pred, target, 0.1, mislocated_is_fn=True),
      100 * 4 / 8)
  assert hand_localiser.localisation_counts(pred, target, 0.04) == (1, 3, 1)
  assert hand_localiser.localisation_counts(pred, target, 0.5) == (3, 1, 1)
  np.testing.assert_allclose(hand_localiser.f1_at_threshold(pred, target, 0.5), 75.0)
  assert hand_localiser.f1_at_threshold(np.zeros((1, 6)), np.zeros((1, 6)), 0.1) == 0


def test_labels_from_landmarks_hand_made_vectors():
  n = handpose.NUM_LANDMARKS
  feats = np.zeros((2, handpose.FEATURE_DIM), np.float32)
  # Frame 0: left hand present, x_k = 0.01 k + 0.1 (mean 0.2), y_k = 0.6.
  o = 0
  feats[0, o:o + 3 * n] = 7.0                        # wrist-relative block: ignored
  feats[0, o + 63:o + 105:2] = 0.1 + 0.01 * np.arange(n)
  feats[0, o + 64:o + 105:2] = 0.6
  feats[0, o + 105] = 1.0
  # Frame 0: right hand absent but with stray coordinates, which must not leak.
  o = handpose.HAND_DIM
  feats[0, o + 63:o + 105] = 0.9
  # Frame 1: right hand present, partly outside the image: x = 1.2 (clipped to 1),
  # y = 0.1 for the first 7 landmarks and 0.4 for the other 14 (mean 0.3).
  feats[1, o + 63:o + 105:2] = 1.2
  feats[1, o + 64:o + 105:2] = np.where(np.arange(n) < 7, 0.1, 0.4)
  feats[1, o + 105] = 1.0
  labels = hand_localiser.labels_from_landmarks(feats)
  np.testing.assert_allclose(labels, [[1, 0.2, 0.6, 0, 0, 0],
                                      [0, 0, 0, 1, 1.0, 0.3]], atol=1e-6)
  with pytest.raises(ValueError, match="212"):
    hand_localiser.labels_from_landmarks(np.zeros((3, 211)))


def test_hand_localiser_outputs_and_names():
  images = jnp.asarray(np.random.default_rng(3).uniform(size=(3, 16, 16, 3)),
                       jnp.float32)
  model = hand_localiser.HandLocaliser(backbone="small")
  variables = _init(model, images)
  out = model.apply(variables, images)
  assert out.shape == (3, 6)
  assert np.all((np.asarray(out) > 0) & (np.asarray(out) < 1))
  # The head is a dense layer on the pooled features, then a sigmoid.
  feats = cnn_lstm.SmallCNN().apply(
      {"params": variables["params"]["backbone"],
       "batch_stats": variables["batch_stats"]["backbone"]}, images)
  head = variables["params"]["head"]
  np.testing.assert_allclose(out, jax.nn.sigmoid(feats @ head["kernel"] + head["bias"]),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="HandLocaliser.backbone"):
    hand_localiser.HandLocaliser(backbone="yolo").init(jax.random.key(0), images)


# ------------------------------------------------------------------------ hand-guided


def test_crop_alignment_hand_example():
  # H = 1080 resized to S = 270 (factor 1/4), crop C_s = 240 at (x_c, y_c) = (10, 20).
  # Cut-out 360 x 360 at (400, 300) full-resolution = (100, 75) resized pixels.
  # w = (360 / 1080)(270 / 240) = 0.375;  x = (100 - 10) / 240 = 0.375;
  # y = (75 - 20) / 240 = 0.2291666...
  want = [0.375, 55 / 240, 0.375, 0.375]
  got = hand_guided.crop_alignment([100.0, 75.0, 360.0, 360.0], [10.0, 20.0],
                                   1080, 240, 270)
  assert isinstance(got, np.ndarray)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  got = hand_guided.crop_alignment([400.0, 300.0, 360.0, 360.0], [10.0, 20.0],
                                   1080, 240, 270, position_in_original_pixels=True)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # A non-square cut-out and a batch of two, under jit.
  boxes = jnp.array([[100.0, 75.0, 360.0, 360.0], [10.0, 20.0, 540.0, 216.0]])
  got = jax.jit(hand_guided.crop_alignment, static_argnums=(2, 3, 4))(
      boxes, jnp.array([10.0, 20.0]), 1080, 240, 270)
  np.testing.assert_allclose(got, [want, [0.0, 0.0, 0.5625, 0.225]], rtol=1e-6)
  with pytest.raises(ValueError, match="crop_size"):
    hand_guided.crop_alignment([0, 0, 1, 1], [0, 0], 1080, 0, 270)


def test_cut_out_hands_pads_at_borders():
  frame = np.arange(5 * 6, dtype=np.float32).reshape(5, 6, 1)       # H = 5, W = 6
  patches, boxes = hand_guided.cut_out_hands(frame, [[0.0, 0.0], [0.5, 0.5]], 2,
                                             pad_value=-1.0)
  # Centre (0, 0): top-left round(0 - 1) = -1, so three of four pixels are padding.
  np.testing.assert_array_equal(patches[0, ..., 0], [[-1, -1], [-1, 0]])
  # Centre (3, 2.5) pixels: top-left (2, 2).
  np.testing.assert_array_equal(patches[1, ..., 0], [[14, 15], [20, 21]])
  np.testing.assert_array_equal(boxes, [[-1, -1, 2, 2], [2, 2, 2, 2]])
  # (h, w) = (1, 3) at (6, 4.5) pixels: top-left (5, 4): one pixel, then padding.
  patches, boxes = hand_guided.cut_out_hands(frame, [[1.0, 0.9]], (1, 3),
                                             pad_value=-1.0)
  np.testing.assert_array_equal(patches[0, ..., 0], [[29, -1, -1]])
  np.testing.assert_array_equal(boxes, [[5, 4, 3, 1]])


def test_paste_hand_features_hand_example():
  hand = jnp.array([[1.0, 2.0], [3.0, 4.0]])[None, ..., None]         # (1, 2, 2, 1)
  # Right half of a 2 x 4 grid: cell centres land on the hand map's pixel centres.
  out = hand_guided.paste_hand_features(hand, jnp.array([[0.5, 0.0, 0.5, 1.0]]), (2, 4))
  np.testing.assert_allclose(out[0, ..., 0], [[0, 0, 1, 2], [0, 0, 3, 4]])
  # The whole of a 1 x 1 grid samples the map's centre: the bilinear mean 2.5.
  out = hand_guided.paste_hand_features(hand, jnp.array([[0.0, 0.0, 1.0, 1.0]]), (1, 1))
  np.testing.assert_allclose(out[0, ..., 0], [[2.5]])
  # An empty box pastes nothing.
  out = hand_guided.paste_hand_features(hand, jnp.zeros((1, 4)), (2, 4))
  np.testing.assert_array_equal(out, 0.0)


def _hand_inputs(rng, b, t, present):
  patches = rng.uniform(size=(b, t, 2, 8, 8, 3)).astype(np.float32)
  boxes = np.tile(np.array([0.25, 0.25, 0.5, 0.5], np.float32), (b, t, 2, 1))
  return patches, boxes, np.full((b, t, 2), present, np.float32)


@pytest.mark.parametrize("fusion", ["aligned", "pooled"])
def test_hand_guided_respects_hand_presence(fusion):
  rng = np.random.default_rng(4)
  frames = rng.uniform(size=(1, 2, 16, 16, 3)).astype(np.float32)
  model = hand_guided.HandGuidedTSM(num_classes=3, backbone_depth=0, hand_depth=0,
                                    num_segments=2, fusion=fusion, fusion_channels=4)
  patches, boxes, present = _hand_inputs(rng, 1, 2, 1.0)
  variables = _init(model, frames, patches, boxes, present)
  apply = jax.jit(model.apply)
  base = apply(variables, frames, patches, boxes, present)
  assert base.shape == (1, 2, 3)
  other = rng.uniform(size=patches.shape).astype(np.float32)
  # Present hands: their pixels matter.
  assert not np.allclose(apply(variables, frames, other, boxes, present), base,
                         atol=1e-5)
  # Absent hands: neither their pixels nor their boxes matter.
  absent = np.zeros_like(present)
  ref = apply(variables, frames, patches, boxes, absent)
  np.testing.assert_allclose(apply(variables, frames, other, boxes * 0.5, absent),
                             ref, rtol=1e-6)
  with pytest.raises(ValueError, match="hand_boxes"):
    model.apply(variables, frames, patches, boxes[..., :3], present)


def test_hand_guided_without_hand_stream_is_the_backbone_alone():
  rng = np.random.default_rng(5)
  frames = rng.uniform(size=(2, 2, 16, 16, 3)).astype(np.float32)
  model = hand_guided.HandGuidedTSM(num_classes=3, backbone_depth=0,
                                    use_hand_stream=False, num_segments=2)
  variables = _init(model, frames)
  logits = model.apply(variables, frames)
  feats = cnn_lstm.SmallCNN().apply(
      {"params": variables["params"]["backbone"],
       "batch_stats": variables["batch_stats"]["backbone"]},
      frames.reshape(4, 16, 16, 3))
  head = variables["params"]["classifier"]
  np.testing.assert_allclose(logits.reshape(4, 3),
                             feats @ head["kernel"] + head["bias"], rtol=1e-5)
  with pytest.raises(ValueError, match="num_segments"):
    hand_guided.HandGuidedTSM(backbone_depth=18, num_segments=8).init(
        jax.random.key(0), frames)


@pytest.mark.skipif(not _has_module("hhjax.models.backbones.resnet"),
                    reason="hhjax.models.backbones.resnet is not available")
def test_hand_guided_resnet18_temporal_shift_mixes_frames():
  rng = np.random.default_rng(6)
  frames = rng.uniform(size=(2, 2, 32, 32, 3)).astype(np.float32)
  frames[1, 0] = frames[0, 0]        # clip 1 = clip 0 with another second frame
  model = hand_guided.HandGuidedTSM(num_classes=3, backbone_depth=18,
                                    temporal_shift=0.25, use_hand_stream=False,
                                    num_segments=2)
  logits = jax.jit(model.apply)(_init(model, frames), frames)
  assert logits.shape == (2, 2, 3)
  # The shift carries frame 1's channels into frame 0, and only within a clip.
  assert not np.allclose(logits[0, 0], logits[1, 0], atol=1e-6)
