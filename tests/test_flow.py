"""Tests for hhjax.ops.flow: TV-L1 optical flow against OpenCV, colour and I3D helpers.

The reference is cv2.optflow.DualTVL1OpticalFlow_create() (opencv-contrib) run in the test
on real hand-washing clips from ../shared/realdata, downscaled to 180x120 to stay fast.
Accuracy criteria, per frame pair, over OpenCV's flow f_cv and ours f:
  * mean |f - f_cv| over pixels with |f_cv| > 1 px  <=  25 % of mean |f_cv| there,
  * mean |f - f_cv| over all pixels                <=  0.5 px,
and an all-zero flow must fail them on the same pairs.
"""

from __future__ import annotations

import inspect
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hhjax.ops import flow

try:
  import cv2
except ImportError:  # the OpenCV comparisons skip, the rest runs
  cv2 = None

needs_cv2 = pytest.mark.skipif(
    cv2 is None or not hasattr(cv2, "optflow"),
    reason="needs cv2.optflow: pip install opencv-contrib-python-headless")

REALDATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
CLIPS = REALDATA / "kaggle_handwash_s002"
SIZE = (180, 120)  # (width, height) for cv2.resize; the clips are 720x480.
# (clip, first frame, gap): three consecutive pairs and three pairs 4 frames apart, at
# moments where the hands move.
PAIRS = (
    ("HandWash_002_A_01_G01.mp4", 225, 1),
    ("HandWash_002_A_04_G_01.mp4", 270, 1),
    ("HandWash_002_A_07_G_01.mp4", 90, 1),
    ("HandWash_002_A_04_G_01.mp4", 135, 4),
    ("HandWash_002_A_07_G_01.mp4", 90, 4),
    ("HandWash_002_A_10_G_01.mp4", 111, 4),
)
MOVING_PX = 1.0
MAX_REL_EPE_MOVING = 0.25
MAX_EPE_ALL = 0.5


def _translated_texture(seed, h, w, dx, dy, sigma):
  """A smooth periodic random texture (0-255 scale) and the same texture moved by (dx, dy).

  The shift is exact (a phase ramp in Fourier space): frame1(x + d) = frame0(x), so the
  true flow is d = (dx, dy) everywhere (up to the periodic wrap at the border).
  """
  rng = np.random.default_rng(seed)
  noise = rng.standard_normal((h, w))
  ky = np.fft.fftfreq(h)[:, None]
  kx = np.fft.fftfreq(w)[None, :]
  spectrum = np.fft.fft2(noise) * np.exp(-2 * (np.pi * sigma) ** 2 * (kx ** 2 + ky ** 2))
  f0 = np.real(np.fft.ifft2(spectrum))
  f1 = np.real(np.fft.ifft2(spectrum * np.exp(-2j * np.pi * (kx * dx + ky * dy))))
  lo, hi = f0.min(), f0.max()
  return 30.0 + 195.0 * (f0 - lo) / (hi - lo), 30.0 + 195.0 * (f1 - lo) / (hi - lo)


def _epe_stats(pred, ref):
  """(mean EPE over all pixels, mean EPE over moving pixels, mean |ref| over moving)."""
  epe = np.linalg.norm(pred - ref, axis=-1)
  mag = np.linalg.norm(ref, axis=-1)
  moving = mag > MOVING_PX
  return float(epe.mean()), float(epe[moving].mean()), float(mag[moving].mean())


def _passes(pred, ref):
  epe_all, epe_moving, mag_moving = _epe_stats(pred, ref)
  return epe_moving <= MAX_REL_EPE_MOVING * mag_moving and epe_all <= MAX_EPE_ALL


# ---------------------------------------------------------------------------------------
# Colour conversion and I3D scaling.


@needs_cv2
def test_to_gray_matches_cvtcolor():
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
  got = np.asarray(flow.to_gray(rgb))
  assert got.dtype == np.uint8
  np.testing.assert_array_equal(got, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
  np.testing.assert_array_equal(np.asarray(flow.to_gray(rgb, "bgr")),
                                cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY))
  as_float = np.asarray(flow.to_gray(rgb.astype(np.float32)))
  np.testing.assert_allclose(as_float, cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2GRAY),
                             atol=1e-3)
  batch = np.asarray(flow.to_gray(np.stack([rgb, rgb[::-1]])))
  np.testing.assert_array_equal(batch[1], cv2.cvtColor(np.ascontiguousarray(rgb[::-1]),
                                                       cv2.COLOR_RGB2GRAY))


def test_flow_to_i3d_clips_and_scales():
  f = np.array([[[0.0, 10.0], [-5.0, 20.0], [25.0, -40.0], [-20.0, 19.9]]], np.float32)
  want = np.array([[[0.0, 0.5], [-0.25, 1.0], [1.0, -1.0], [-1.0, 0.995]]], np.float32)
  got = np.asarray(flow.flow_to_i3d(f))
  assert got.shape == f.shape
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert got.min() >= -1.0 and got.max() <= 1.0


@needs_cv2
def test_defaults_match_opencv_getters():
  o = cv2.optflow.DualTVL1OpticalFlow_create()
  got = dict(tau=o.getTau(), lambda_=o.getLambda(), theta=o.getTheta(), nscales=o.getScalesNumber(),
             warps=o.getWarpingsNumber(), epsilon=o.getEpsilon(),
             inner_iterations=o.getInnerIterations(), outer_iterations=o.getOuterIterations(),
             scale_step=o.getScaleStep(), gamma=o.getGamma(),
             median_filtering=o.getMedianFiltering(), use_initial_flow=o.getUseInitialFlow())
  assert got.keys() == flow.OPENCV_DEFAULTS.keys()
  for name, value in flow.OPENCV_DEFAULTS.items():
    assert got[name] == pytest.approx(value), name
  params = inspect.signature(flow.tvl1).parameters
  for name, value in flow.OPENCV_DEFAULTS.items():
    assert params[name].default == value, name


# ---------------------------------------------------------------------------------------
# Building blocks against the OpenCV functions they stand for.


@needs_cv2
def test_resize_matrices_match_cv2_resize():
  rng = np.random.default_rng(1)
  img = (rng.random((61, 77)) * 255).astype(np.float32)
  down = cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
  h, w = down.shape
  assert flow._pyramid_sizes(61, 77, 2, 0.8)[1] == (h, w)
  got = flow._resize(jnp.asarray(img), flow._linear_matrix(h, 61, 1.25),
                     flow._linear_matrix(w, 77, 1.25))
  np.testing.assert_allclose(np.asarray(got), down, atol=1e-3)
  up = cv2.resize(down, (77, 61), interpolation=cv2.INTER_LINEAR)
  got = flow._resize(jnp.asarray(down), flow._linear_matrix(61, h, h / 61),
                     flow._linear_matrix(77, w, w / 77))
  np.testing.assert_allclose(np.asarray(got), up, atol=1e-3)


@needs_cv2
def test_median_matches_cv2_medianblur():
  rng = np.random.default_rng(2)
  u = rng.standard_normal((2, 23, 31)).astype(np.float32)
  for k in (3, 5):
    got = np.asarray(flow._median_filter(jnp.asarray(u), k))
    for c in range(2):
      np.testing.assert_array_equal(got[c], cv2.medianBlur(u[c], k))


@needs_cv2
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_remap_matches_cv2_remap(interpolation):
  cv_flag = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR}[interpolation]
  rng = np.random.default_rng(3)
  img = (rng.random((30, 40)) * 255).astype(np.float32)
  ys, xs = np.mgrid[0:30, 0:40].astype(np.float32)
  # Displacements up to a few pixels, so that some samples fall outside the image.
  mx = xs + (rng.standard_normal(xs.shape) * 3).astype(np.float32)
  my = ys + (rng.standard_normal(ys.shape) * 3).astype(np.float32)
  want = cv2.remap(img, mx, my, cv_flag)
  got = np.asarray(flow._remap(jnp.asarray(img)[None], jnp.asarray(mx), jnp.asarray(my),
                               interpolation))[0]
  np.testing.assert_allclose(got, want, atol=2e-3)


# ---------------------------------------------------------------------------------------
# Small, fast configurations: options against OpenCV, vmap.


def _assert_float_close(got, ref):
  """Agreement up to float32 rounding (a rare pixel may switch thresholding case)."""
  diff = np.abs(got - ref)
  assert diff.mean() < 2e-4, diff.mean()
  assert diff.max() < 2e-2, diff.max()


def _small_pair(seed=4, h=40, w=52, dx=1.3, dy=-0.7):
  f0, f1 = _translated_texture(seed, h, w, dx, dy, sigma=1.5)
  return (np.round(f0).astype(np.uint8),
          np.round(np.clip(f1, 0, 255)).astype(np.uint8))


SMALL = dict(nscales=2, warps=2, inner_iterations=10, outer_iterations=2, epsilon=0.01,
             median_filtering=3, tau=0.25, lambda_=0.3, theta=0.3, scale_step=0.6)


@needs_cv2
def test_small_config_matches_opencv_with_same_parameters():
  a, b = _small_pair()
  ref = cv2.optflow.DualTVL1OpticalFlow_create(
      SMALL["tau"], SMALL["lambda_"], SMALL["theta"], SMALL["nscales"], SMALL["warps"],
      SMALL["epsilon"], SMALL["inner_iterations"], SMALL["outer_iterations"],
      SMALL["scale_step"], 0.0, SMALL["median_filtering"]).calc(a, b, None)
  got = np.asarray(flow.tvl1(a.astype(np.float32), b.astype(np.float32), **SMALL))
  assert got.shape == (40, 52, 2) and got.dtype == np.float32
  # Few iterations, no chaotic amplification yet: agreement to float rounding.
  _assert_float_close(got, ref)
  # uint8 input is accepted and means the same thing.
  np.testing.assert_array_equal(np.asarray(flow.tvl1(a, b, **SMALL)), got)


@needs_cv2
def test_small_config_gamma_and_initial_flow_match_opencv():
  a, b = _small_pair(seed=9, dx=-0.8, dy=1.1)
  gamma = 0.1
  rng = np.random.default_rng(10)
  init = (np.array([-0.5, 0.8]) + 0.2 * rng.standard_normal((40, 52, 2))).astype(np.float32)
  tvl1_cv = cv2.optflow.DualTVL1OpticalFlow_create(
      SMALL["tau"], SMALL["lambda_"], SMALL["theta"], SMALL["nscales"], SMALL["warps"],
      SMALL["epsilon"], SMALL["inner_iterations"], SMALL["outer_iterations"],
      SMALL["scale_step"], gamma, SMALL["median_filtering"], True)
  ref = tvl1_cv.calc(a, b, init.copy())
  got = np.asarray(flow.tvl1(a, b, init, use_initial_flow=True, gamma=gamma, **SMALL))
  _assert_float_close(got, ref)


def test_vmap_equals_per_pair():
  pairs = [_small_pair(seed=s, dx=0.5 * s, dy=-0.3 * s) for s in (5, 6, 7)]
  f0 = np.stack([p[0] for p in pairs]).astype(np.float32)
  f1 = np.stack([p[1] for p in pairs]).astype(np.float32)
  batched = np.asarray(jax.vmap(lambda a, b: flow.tvl1(a, b, **SMALL))(f0, f1))
  assert batched.shape == (3, 40, 52, 2)
  for k in range(3):
    single = np.asarray(flow.tvl1(f0[k], f1[k], **SMALL))
    # Same arithmetic, fused differently: equal up to float32 rounding.
    np.testing.assert_allclose(batched[k], single, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------------------
# Default parameters (one compilation at 120x180 shared by the tests below).


def _tvl1_default(a, b):
  return np.asarray(flow.tvl1(np.asarray(a, np.float32), np.asarray(b, np.float32)))


def test_synthetic_translation():
  h, w = SIZE[1], SIZE[0]
  dx, dy = 1.5, -0.5
  frame0, frame1 = _translated_texture(8, h, w, dx, dy, sigma=2.0)
  got = _tvl1_default(frame0, frame1)
  interior = got[10:-10, 10:-10]
  err = np.linalg.norm(interior - np.array([dx, dy]), axis=-1)
  # Measured: mean flow (1.501, -0.499), EPE median 0.005, mean 0.006, max 0.033 px.
  assert abs(interior[..., 0].mean() - dx) < 0.02
  assert abs(interior[..., 1].mean() - dy) < 0.02
  assert np.median(err) < 0.02
  assert err.mean() < 0.03
  assert err.max() < 0.2


@pytest.fixture(scope="module")
def real_pairs():
  """[(name, hhjax flow, OpenCV flow)] for PAIRS, computed once."""
  if not CLIPS.is_dir():
    pytest.skip(f"real clips not found at {CLIPS} (../shared/realdata beside the repo)")
  decord = pytest.importorskip("decord", reason="decord is needed to read the mp4 clips")
  tvl1_cv = cv2.optflow.DualTVL1OpticalFlow_create()
  out = []
  for clip, start, gap in PAIRS:
    path = CLIPS / clip
    if not path.is_file():
      pytest.skip(f"clip {path} is absent")
    frames = decord.VideoReader(str(path)).get_batch([start, start + gap]).asnumpy()
    grey = [cv2.cvtColor(cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
            for f in frames]
    ref = tvl1_cv.calc(grey[0], grey[1], None)
    got = _tvl1_default(grey[0], grey[1])
    out.append((f"{clip}[{start}->{start + gap}]", got, ref))
  return out


@needs_cv2
def test_matches_opencv_on_real_clips(real_pairs):
  lines, failures = [], []
  for name, got, ref in real_pairs:
    assert got.shape == ref.shape == (SIZE[1], SIZE[0], 2)
    assert np.isfinite(got).all()
    epe_all, epe_moving, mag_moving = _epe_stats(got, ref)
    lines.append(f"{name}: EPE all {epe_all:.3f} px, moving {epe_moving:.3f} px "
                 f"= {100 * epe_moving / mag_moving:.1f}% of |f_cv| {mag_moving:.2f} px")
    if not _passes(got, ref):
      failures.append(lines[-1])
  print("\n".join(lines))
  assert not failures, "\n".join(failures)


@needs_cv2
def test_zero_flow_fails_the_same_criteria(real_pairs):
  for name, _, ref in real_pairs:
    zero = np.zeros_like(ref)
    epe_all, epe_moving, mag_moving = _epe_stats(zero, ref)
    assert (np.linalg.norm(ref, axis=-1) > MOVING_PX).mean() > 0.05, f"{name}: too little motion"
    assert not _passes(zero, ref), name
    # Both criteria fail on their own on these pairs.
    assert epe_moving > MAX_REL_EPE_MOVING * mag_moving, name
    assert epe_all > MAX_EPE_ALL, name
