"""Tests for `hhjax.handpose`: the per-frame layout from hand-worked landmarks (always),
and the stream on a real clip with MediaPipe (where `hhjax[handpose]` is installed)."""

import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from hhjax import extract, handpose

REAL = (pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
        / "kaggle_handwash_train")
CLIP = REAL / "HandWash_002_A_04_G_01.mp4"
HAS_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None
needs_mediapipe = pytest.mark.skipif(
    not HAS_MEDIAPIPE, reason='mediapipe is not installed (pip install "hhjax[handpose]")')


def _hand(scale=1.0, shift=(0.0, 0.0)):
  """Landmarks of a 100 x 50 px frame: wrist at (0.5, 0.5), middle base 10 px above."""
  lm = np.zeros((21, 3))
  lm[:, 0] = 0.5 + shift[0]
  lm[:, 1] = 0.5 + shift[1]
  lm[9, 1] -= scale * 10 / 50           # 10 px up (height 50)
  lm[4, 0] += scale * 5 / 100           # thumb tip 5 px right (width 100)
  lm[4, 2] = scale * 0.03               # depth on the x scale: 3 px
  return lm


def test_hand_vector_by_hand():
  v = handpose.hand_vector(_hand(), width=100, height=50)
  assert v.shape == (handpose.HAND_DIM,) and v.dtype == np.float32
  rel = v[:63].reshape(21, 3)
  np.testing.assert_allclose(rel[0], 0)                     # the wrist is the origin
  np.testing.assert_allclose(rel[9], [0, -1, 0], atol=1e-6)  # the unit of length
  np.testing.assert_allclose(rel[4], [0.5, 0, 0.3], atol=1e-6)
  np.testing.assert_allclose(v[63:105].reshape(21, 2), _hand()[:, :2], atol=1e-6)
  assert v[105] == 1.0


def test_hand_vector_ignores_size_and_place():
  a = handpose.hand_vector(_hand(), 100, 50)
  b = handpose.hand_vector(_hand(scale=2.5, shift=(0.1, -0.2)), 100, 50)
  np.testing.assert_allclose(a[:63], b[:63], atol=1e-5)
  assert not np.allclose(a[63:105], b[63:105])


def test_degenerate_hand_falls_back_to_its_extent():
  lm = _hand()
  lm[9] = lm[0]                                 # middle base on the wrist
  v = handpose.hand_vector(lm, 100, 50)
  np.testing.assert_allclose(np.abs(v[:63]).max(), 1.0, atol=1e-6)   # thumb tip: 5 px
  assert np.isfinite(v).all()
  with pytest.raises(ValueError, match="21, 3"):
    handpose.hand_vector(np.zeros((20, 3)), 100, 50)


def test_frame_vector_slots_and_absent_hands():
  left = handpose.Hand("Left", 0.9, _hand())
  right = handpose.Hand("Right", 0.8, _hand(shift=(0.2, 0)))
  v = handpose.frame_vector([right, left], 100, 50)
  assert v.shape == (handpose.FEATURE_DIM,)
  h = handpose.HAND_DIM
  np.testing.assert_array_equal(v[:h], handpose.hand_vector(left.landmarks, 100, 50))
  np.testing.assert_array_equal(v[h:], handpose.hand_vector(right.landmarks, 100, 50))
  only_right = handpose.frame_vector([right], 100, 50)
  np.testing.assert_array_equal(only_right[:h], 0)
  np.testing.assert_array_equal(handpose.presence(only_right[:, None])[:, 0], [0, 1])
  np.testing.assert_array_equal(handpose.frame_vector([], 100, 50), 0)
  # Two "Left" labels: the more confident keeps slot 0, the other takes slot 1.
  weak = handpose.Hand("Left", 0.3, _hand(shift=(0.2, 0)))
  both = handpose.frame_vector([weak, left], 100, 50)
  np.testing.assert_array_equal(both[:h], handpose.hand_vector(left.landmarks, 100, 50))
  np.testing.assert_array_equal(both[h:], handpose.hand_vector(weak.landmarks, 100, 50))


def test_extract_refuses_i3d_options_with_handpose(tmp_path, capsys):
  for extra in (["--random-weights"], ["--rgb-weights", "x.npz"]):
    with pytest.raises(SystemExit):
      extract.main(["--stream", "handpose", "--videos", str(tmp_path), "--out",
                    str(tmp_path / "o")] + extra)
    assert "for --stream i3d" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    extract.main(["--videos", str(tmp_path), "--out", str(tmp_path / "o"),
                  "--random-weights", "--workers", "2"])
  assert "--workers is for --stream handpose" in capsys.readouterr().err


@pytest.mark.skipif(HAS_MEDIAPIPE, reason="checks the message shown without mediapipe")
def test_missing_mediapipe_says_how_to_install():
  with pytest.raises(ImportError, match=r"hhjax\[handpose\]"):
    handpose.HandPoseExtractor()


@needs_mediapipe
def test_libraries_import_together():
  """jax, flax, TFDS, grain, decord and mediapipe in one process (protobuf pins)."""
  code = ("import jax, flax, grain, decord, mediapipe, tensorflow_datasets as tfds;"
          "import hhjax.data.hha300, hhjax.train;"
          "mediapipe.solutions.hands.Hands(static_image_mode=True).close();"
          "print(tfds.data_source.__name__, jax.numpy.ones(2).sum())")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "data_source 2.0" in out.stdout


@needs_mediapipe
def test_real_clip_layout(tmp_path):
  if not CLIP.is_file():
    pytest.skip(f"real clip not available ({CLIP} is absent)")
  frames = 90
  status = extract.main(["--stream", "handpose", "--videos", str(CLIP), "--out",
                         str(tmp_path), "--max-frames", str(frames), "--no-progress"])
  assert status == 0
  f = np.load(tmp_path / "features" / f"{CLIP.stem}.npy")
  assert f.shape == (handpose.FEATURE_DIM, frames) and f.dtype == np.float32
  assert np.isfinite(f).all()
  flags = handpose.presence(f)
  assert set(np.unique(flags)) <= {0.0, 1.0}
  # Step 4 (backs of fingers): both hands are in view for most of the clip.
  assert flags.any(axis=0).mean() > 0.8 and flags.all(axis=0).mean() > 0.3
  for slot in range(2):
    block = f[slot * handpose.HAND_DIM:(slot + 1) * handpose.HAND_DIM]
    absent = flags[slot] == 0
    np.testing.assert_array_equal(block[:, absent], 0)
    present = block[:, ~absent]
    np.testing.assert_allclose(present[:3], 0, atol=1e-6)    # wrist at the origin
    np.testing.assert_allclose(np.hypot(present[27], present[28]), 1, atol=1e-4)
    assert ((present[63:105] > -0.2) & (present[63:105] < 1.2)).all()
