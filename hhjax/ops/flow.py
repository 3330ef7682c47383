"""TV-L1 optical flow in JAX, matching OpenCV's ``DualTVL1OpticalFlow``.

The method is the dual TV-L1 flow of Zach, Pock & Bischof ("A duality based approach
for realtime TV-L1 optical flow", DAGM 2007) with the refinements of Wedel, Pock, Zach,
Bischof & Cremers ("An improved algorithm for TV-L1 optical flow", 2009) as described by
Sanchez, Meinhardt-Llopis & Facciolo ("TV-L1 Optical Flow Estimation", IPOL 2013). The
energy is

    E(u) = sum_x |grad u1| + |grad u2| + lambda * |rho(u)|,
    rho(u) = I1(x + u0) + grad I1(x + u0) . (u - u0) - I0(x)      (linearised at u0)

and it is minimised by alternating, with an auxiliary field v coupled to u by
1/(2 theta) |u - v|^2,

1. the point-wise thresholding step (three cases on rho against lambda*theta*|grad I1|^2):
   v = u + lambda*theta*grad I1           if rho < -lambda*theta*|grad I1|^2
   v = u - lambda*theta*grad I1           if rho >  lambda*theta*|grad I1|^2
   v = u - rho * grad I1 / |grad I1|^2    otherwise,
2. u = v + theta * div p, and
3. Chambolle's projection for the dual variables
   p <- (p + tau/theta * grad u) / (1 + tau/theta * |grad u|),

inside a coarse-to-fine pyramid with several warps per scale. The details follow
OpenCV's implementation (``cv2.optflow.DualTVL1OpticalFlow_create``) so that the two can
be compared directly:

* pyramid: each level is the previous one resized by ``scale_step`` with bilinear
  interpolation (``cv2.resize``/``INTER_LINEAR`` sampling, no pre-smoothing by default;
  ``presmooth=True`` adds the IPOL Gaussian, sigma = 0.6 * sqrt(scale_step**-2 - 1)); levels
  smaller than 16 pixels on a side are dropped. The flow of a coarse level is resized
  bilinearly to the next finer level and multiplied by ``1 / scale_step``.
* warping: I1 and its centred-difference gradients are sampled at x + u with bicubic
  interpolation (Keys kernel with a = -0.75 as ``cv2.remap``/``INTER_CUBIC``, zero
  outside the image); ``interpolation="bilinear"`` is the cheaper alternative.
* the dual variables are reset to zero at every scale and kept across warps.
* each warp runs up to ``outer_iterations`` x ``inner_iterations`` iterations; a 5x5 (by
  default) median filter is applied to the flow at the start of every outer iteration,
  i.e. right after each warp and then every ``inner_iterations`` iterations, exactly where
  OpenCV applies it.
* stopping criterion: a warp ends early once sum_x |u_new - u_old|^2 <= epsilon^2 * H * W
  (OpenCV's test). In JAX this is a ``lax.while_loop`` whose condition holds the test, so
  the number of iterations is data dependent but bounded; under ``jax.vmap`` the loop runs
  until every pair in the batch has stopped and each pair keeps its own iteration count
  and result (the computation of running the pairs one at a time, up to float32 rounding).
  ``epsilon=0`` gives a fixed iteration count.
* ``gamma > 0`` adds OpenCV's illumination variable u3 (rho gains ``gamma * u3``, u3 is
  regularised by TV like u1 and u2 and is not median filtered).

TV-L1 is sensitive to rounding: thresholding cases and median ranks can flip, so two
mathematically equal runs (OpenCV vs JAX, vmap vs single, or a 1e-3 grey-level change of
the input) agree to ~1e-2 px on average but can differ by pixels at isolated points.

Images are single-channel float arrays with grey levels on the 0-255 scale (uint8 is also
accepted and converted). OpenCV multiplies float32 input by 255 (it assumes [0, 1]) and
uses uint8 as is, so ``tvl1(a.astype(float), b.astype(float))`` corresponds to
``cv2...calc(a, b, None)`` for uint8 ``a, b``. The flow is returned as (H, W, 2) float32,
channel 0 = x (columns), channel 1 = y (rows), in pixels, such that
``frame1[y + v, x + u] ~ frame0[y, x]``.

All shapes and parameters are static: ``tvl1`` calls a jitted core whose keyword
arguments are static (one compilation per image size and parameter set), and it works
inside ``jax.jit`` and under ``jax.vmap`` (batches of frame pairs).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["tvl1", "to_gray", "flow_to_i3d", "OPENCV_DEFAULTS"]

# The defaults of cv2.optflow.DualTVL1OpticalFlow_create() (its getters), keyed by the
# keyword names of `tvl1`.
OPENCV_DEFAULTS = dict(
    tau=0.25,
    lambda_=0.15,
    theta=0.3,
    nscales=5,
    warps=5,
    epsilon=0.01,
    inner_iterations=30,
    outer_iterations=10,
    scale_step=0.8,
    gamma=0.0,
    median_filtering=5,
    use_initial_flow=False,
)

_HIGHEST = jax.lax.Precision.HIGHEST
_FLT_EPSILON = float(np.finfo(np.float32).eps)
_MIN_LEVEL_SIZE = 16  # OpenCV stops building the pyramid below 16 pixels.


# ---------------------------------------------------------------------------------------
# Colour conversion and I3D preprocessing.


def to_gray(image, channel_order: str = "rgb"):
  """Converts (..., 3) colour to grey with the ITU-R BT.601 luma weights.

  Y = 0.299 R + 0.587 G + 0.114 B, as ``cv2.cvtColor(..., COLOR_RGB2GRAY)``. For uint8
  input the result is uint8 and bit-exact with OpenCV, which uses 15-bit fixed-point
  weights (9798, 19235, 3735, summing to 2**15) with rounding; float input gives float
  output.

  Args:
    image: (..., 3) array, uint8 or float.
    channel_order: "rgb" (decord, PIL) or "bgr" (cv2.imread / VideoCapture).

  Returns:
    (...) grey array.
  """
  image = jnp.asarray(image)
  if image.shape[-1] != 3:
    raise ValueError(f"expected (..., 3) colour input, got shape {image.shape}")
  if channel_order not in ("rgb", "bgr"):
    raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
  r_idx, b_idx = (0, 2) if channel_order == "rgb" else (2, 0)
  r, g, b = image[..., r_idx], image[..., 1], image[..., b_idx]
  if image.dtype == jnp.uint8:
    shift = 15
    acc = (r.astype(jnp.int32) * 9798 + g.astype(jnp.int32) * 19235 +
           b.astype(jnp.int32) * 3735 + (1 << (shift - 1)))
    return (acc >> shift).astype(jnp.uint8)
  if not jnp.issubdtype(image.dtype, jnp.floating):
    image = image.astype(jnp.float32)
    r, g, b = image[..., r_idx], image[..., 1], image[..., b_idx]
  return 0.299 * r + 0.587 * g + 0.114 * b


def flow_to_i3d(flow, bound: float = 20.0):
  """I3D flow-stream preprocessing: clip each component to [-bound, bound], map to [-1, 1].

  This is the convention of Carreira & Zisserman (2017) for TV-L1 flow (bound 20 pixels);
  the (..., 2) layout (x, y) is kept.
  """
  flow = jnp.asarray(flow)
  if not jnp.issubdtype(flow.dtype, jnp.floating):
    flow = flow.astype(jnp.float32)
  return jnp.clip(flow, -bound, bound) / bound


# ---------------------------------------------------------------------------------------
# Resampling matrices (static, built with NumPy in float64).


def _pyramid_sizes(height: int, width: int, nscales: int, scale_step: float):
  """Level sizes as OpenCV makes them: round(size * scale_step), stop below 16 px."""
  sizes = [(height, width)]
  for _ in range(1, nscales):
    h, w = sizes[-1]
    # cv::resize with fx = fy = scale_step: dsize = saturate_cast<int>(size * fx)
    # (round half to even, like Python's round).
    nh, nw = int(round(h * scale_step)), int(round(w * scale_step))
    if nh < _MIN_LEVEL_SIZE or nw < _MIN_LEVEL_SIZE:
      break
    sizes.append((nh, nw))
  return sizes


def _linear_matrix(n_out: int, n_in: int, scale: float) -> np.ndarray:
  """(n_out, n_in) matrix of bilinear resampling along one axis, cv2.resize style.

  Output sample d sits at source position (d + 0.5) * scale - 0.5 where scale is the
  source/destination step; positions left of the first sample are clamped to it and
  neighbours past the last sample are replaced by the last one (replicated border).
  """
  pos = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
  i0 = np.floor(pos).astype(np.int64)
  frac = pos - i0
  frac = np.where(i0 < 0, 0.0, frac)
  i0 = np.maximum(i0, 0)
  frac = np.where(i0 >= n_in - 1, 0.0, frac)
  i0 = np.minimum(i0, n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  mat = np.zeros((n_out, n_in), np.float64)
  rows = np.arange(n_out)
  np.add.at(mat, (rows, i0), 1.0 - frac)
  np.add.at(mat, (rows, i1), frac)
  return mat


def _gaussian_matrix(n: int, sigma: float) -> np.ndarray:
  """(n, n) matrix of a normalised 1-D Gaussian blur with a mirrored border."""
  if sigma <= 0:
    return np.eye(n)
  radius = max(1, int(math.ceil(3.0 * sigma)))
  taps = np.arange(-radius, radius + 1)
  kernel = np.exp(-0.5 * (taps / sigma) ** 2)
  kernel /= kernel.sum()
  mat = np.zeros((n, n), np.float64)
  for i in range(n):
    for t, k in zip(taps, kernel):
      j = i + t
      # symmetric reflection without repeating the edge sample (reflect-101); fall back
      # to clamping when the kernel is wider than the signal.
      if j < 0:
        j = -j
      if j > n - 1:
        j = 2 * (n - 1) - j
      j = min(max(j, 0), n - 1)
      mat[i, j] += k
  return mat


def _resize(image, rows: np.ndarray, cols: np.ndarray):
  """Separable resampling: rows @ image @ cols.T with static float64-built matrices."""
  r = jnp.asarray(rows, jnp.float32)
  c = jnp.asarray(cols, jnp.float32)
  out = jnp.matmul(r, image, precision=_HIGHEST)
  return jnp.matmul(out, c.T, precision=_HIGHEST)


# ---------------------------------------------------------------------------------------
# Finite differences (OpenCV / IPOL boundary conventions).


def _centered_gradient(image):
  """Central differences, one-sided (halved) at the border, as OpenCV's TV-L1."""
  p = jnp.pad(image, 1, mode="edge")
  dx = 0.5 * (p[1:-1, 2:] - p[1:-1, :-2])
  dy = 0.5 * (p[2:, 1:-1] - p[:-2, 1:-1])
  return dx, dy


def _pad_last2(x, rows, cols):
  return jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [rows, cols])


def _forward_gradient(u):
  """Forward differences of (..., H, W) with zero in the last column / row."""
  dx = _pad_last2(u[..., :, 1:] - u[..., :, :-1], (0, 0), (0, 1))
  dy = _pad_last2(u[..., 1:, :] - u[..., :-1, :], (0, 1), (0, 0))
  return dx, dy


def _divergence(px, py):
  """Backward differences with p = 0 before the first column / row (adjoint of -grad)."""
  return (px - _pad_last2(px[..., :, :-1], (0, 0), (1, 0)) +
          py - _pad_last2(py[..., :-1, :], (1, 0), (0, 0)))


# ---------------------------------------------------------------------------------------
# Median filter: a sorting network pruned to its middle output.


@functools.lru_cache(maxsize=None)
def _median_network(n: int):
  """Compare-exchange list computing the median of n values, as (i, j, need_lo, need_hi).

  Built from Batcher's odd-even merge sort on the next power of two, with the padding
  wires held at +inf (their comparators become renamings) and every comparator that
  cannot reach the middle output removed. Returns (ops, output wire); the ops act on
  wires 0..n-1 only.
  """
  size = 1
  while size < n:
    size *= 2
  comps = []
  p = 1
  while p < size:
    k = p
    while k >= 1:
      for j in range(k % p, size - k, 2 * k):
        for i in range(min(k, size - j - k)):
          if (i + j) // (2 * p) == (i + j + k) // (2 * p):
            comps.append((i + j, i + j + k))
      k //= 2
    p *= 2
  # Forward pass: position -> symbolic wire (an input index) or None for +inf.
  slot = list(range(n)) + [None] * (size - n)
  ops = []
  for a, b in comps:
    wa, wb = slot[a], slot[b]
    if wa is None and wb is None:
      continue
    if wb is None:  # min(x, inf) = x stays at a, inf stays at b.
      continue
    if wa is None:  # the finite value moves down to a.
      slot[a], slot[b] = wb, None
      continue
    ops.append((wa, wb))  # after it, wire wa holds the min and wb the max.
  out = slot[(n - 1) // 2]
  # Backward pass: drop what does not reach the output.
  needed = {out}
  kept = []
  for wa, wb in reversed(ops):
    need_lo, need_hi = wa in needed, wb in needed
    if not (need_lo or need_hi):
      continue
    kept.append((wa, wb, need_lo, need_hi))
    needed.update((wa, wb))
  kept.reverse()
  return tuple(kept), out


def _median_filter(u, ksize: int):
  """ksize x ksize median with a replicated border (cv2.medianBlur); u is (..., H, W)."""
  r = ksize // 2
  h, w = u.shape[-2:]
  pad = [(0, 0)] * (u.ndim - 2) + [(r, r), (r, r)]
  p = jnp.pad(u, pad, mode="edge")
  wires = [p[..., dy:dy + h, dx:dx + w] for dy in range(ksize) for dx in range(ksize)]
  ops, out = _median_network(ksize * ksize)
  for a, b, need_lo, need_hi in ops:
    lo = jnp.minimum(wires[a], wires[b]) if need_lo else None
    hi = jnp.maximum(wires[a], wires[b]) if need_hi else None
    if need_lo:
      wires[a] = lo
    if need_hi:
      wires[b] = hi
  return wires[out]


# ---------------------------------------------------------------------------------------
# Warping.


def _cubic_weights(t):
  """Keys cubic convolution weights (a = -0.75, as OpenCV) for offsets -1, 0, 1, 2."""
  a = -0.75

  def near(s):  # |s| <= 1
    return ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0

  def far(s):  # 1 < |s| < 2
    return ((a * s - 5.0 * a) * s + 8.0 * a) * s - 4.0 * a

  w0 = far(1.0 + t)
  w1 = near(t)
  w2 = near(1.0 - t)
  w3 = 1.0 - w0 - w1 - w2
  return (w0, w1, w2, w3)


def _remap(images, map_x, map_y, interpolation: str):
  """Samples images (C, H, W) at (map_x, map_y) (H, W); zero outside, like cv2.remap.

  Taps that fall outside the image read 0 (cv2.BORDER_CONSTANT), so the value fades out
  over the last pixels past the border. Positions are used at full float precision, as
  OpenCV 5 does (OpenCV 4 rounded them to 1/32 pixel first).
  """
  _, h, w = images.shape
  # Keep the positions finite and small; anything 3 px outside reads only zeros.
  map_x = jnp.clip(map_x, -4.0, w + 3.0)
  map_y = jnp.clip(map_y, -4.0, h + 3.0)
  fx0, fy0 = jnp.floor(map_x), jnp.floor(map_y)
  fx, fy = map_x - fx0, map_y - fy0
  ix, iy = fx0.astype(jnp.int32), fy0.astype(jnp.int32)
  if interpolation == "bicubic":
    offsets = (-1, 0, 1, 2)
    wx, wy = _cubic_weights(fx), _cubic_weights(fy)
  elif interpolation == "bilinear":
    offsets = (0, 1)
    wx, wy = (1.0 - fx, fx), (1.0 - fy, fy)
  else:
    raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}")
  flat = images.reshape(images.shape[0], h * w)
  out = jnp.zeros_like(images)
  for oy, wyk in zip(offsets, wy):
    yy = iy + oy
    vy = (yy >= 0) & (yy < h)
    for ox, wxk in zip(offsets, wx):
      xx = ix + ox
      valid = vy & (xx >= 0) & (xx < w)
      idx = jnp.clip(yy, 0, h - 1) * w + jnp.clip(xx, 0, w - 1)
      vals = jnp.take(flat, idx.reshape(-1), axis=1).reshape(images.shape)
      out = out + jnp.where(valid, wyk * wxk, 0.0) * vals
  return out


# ---------------------------------------------------------------------------------------
# One pyramid level.


def _one_scale(i0, i1, u, *, tau, lambda_, theta, warps, epsilon, inner_iterations,
               outer_iterations, gamma, median_filtering, interpolation):
  """Refines the flow u = (u1, u2[, u3]), shape (nvar, H, W), at one level.

  The fields are kept stacked so that each iteration is a handful of array expressions
  (small programs compile fast).
  """
  h, w = i0.shape
  nvar = u.shape[0]
  l_t = jnp.float32(lambda_ * theta)
  taut = jnp.float32(tau / theta)
  scaled_eps = jnp.float32(epsilon * epsilon * h * w)
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  i1x, i1y = _centered_gradient(i1)
  sources = jnp.stack([i1, i1x, i1y])

  def inner_step(u, p, gi, grad, rho_c):
    """One iteration; gi = (I1wx, I1wy[, gamma]) (nvar, H, W), p (nvar, 2, H, W)."""
    # Thresholding step on rho(u) = rho_c + gi . u: v = u + coef * gi.
    rho = rho_c + jnp.sum(gi * u, axis=0)
    mid_ok = grad > _FLT_EPSILON
    coef = jnp.where(
        rho < -l_t * grad, l_t,
        jnp.where(rho > l_t * grad, -l_t,
                  jnp.where(mid_ok, -rho / jnp.where(mid_ok, grad, 1.0), 0.0)))
    # u = v + theta * div p.
    new_u = u + coef * gi + jnp.float32(theta) * _divergence(p[:, 0], p[:, 1])
    error = jnp.sum(jnp.square(new_u - u))
    # Dual step (Chambolle's projection).
    gx, gy = _forward_gradient(new_u)
    norm = 1.0 + taut * jnp.sqrt(gx * gx + gy * gy)
    new_p = (p + taut * jnp.stack([gx, gy], axis=1)) / norm[:, None]
    return new_u, new_p, error

  def warp(_, carry):
    u, p = carry
    warped = _remap(sources, xs + u[0], ys + u[1], interpolation)
    i1w, i1wx, i1wy = warped[0], warped[1], warped[2]
    grad = i1wx * i1wx + i1wy * i1wy
    rho_c = i1w - i1wx * u[0] - i1wy * u[1] - i0
    gi = [i1wx, i1wy]
    if nvar == 3:
      gi.append(jnp.full((h, w), gamma, jnp.float32))
    gi = jnp.stack(gi)

    def inner_cond(c):
      return (c[2] > scaled_eps) & (c[3] < inner_iterations)

    def inner_body(c):
      u, p, _, n = c
      u, p, err = inner_step(u, p, gi, grad, rho_c)
      return u, p, err, n + 1

    def outer_cond(c):
      return (c[2] > scaled_eps) & (c[3] < outer_iterations)

    def outer_body(c):
      u, p, err, n = c
      if median_filtering > 1:
        u = u.at[:2].set(_median_filter(u[:2], median_filtering))
      u, p, err, _ = jax.lax.while_loop(inner_cond, inner_body, (u, p, err, jnp.int32(0)))
      return u, p, err, n + 1

    init = (u, p, jnp.float32(jnp.inf), jnp.int32(0))
    u, p, _, _ = jax.lax.while_loop(outer_cond, outer_body, init)
    return u, p

  p0 = jnp.zeros((nvar, 2, h, w), jnp.float32)
  u, _ = jax.lax.fori_loop(0, warps, warp, (u, p0))
  return u


# ---------------------------------------------------------------------------------------
# Public entry point.


def tvl1(frame0, frame1, initial_flow=None, *, tau: float = 0.25, lambda_: float = 0.15,
         theta: float = 0.3, nscales: int = 5, warps: int = 5, epsilon: float = 0.01,
         inner_iterations: int = 30, outer_iterations: int = 10, scale_step: float = 0.8,
         gamma: float = 0.0, median_filtering: int = 5, use_initial_flow: bool = False,
         interpolation: str = "bicubic", presmooth: bool = False):
  """Dual TV-L1 optical flow from frame0 to frame1 (OpenCV-compatible defaults).

  Args:
    frame0, frame1: (H, W) grey images, grey levels on the 0-255 scale (float or uint8).
    initial_flow: (H, W, 2) starting flow, read only when ``use_initial_flow``.
    tau: time step of the dual (Chambolle) iteration (stable for tau <= 0.25).
    lambda_: weight of the data term (smaller = smoother flow).
    theta: coupling between u and v.
    nscales: number of pyramid levels (fewer if a level would be below 16 px).
    warps: warps (re-linearisations of the data term) per level.
    epsilon: stopping threshold: a warp stops when the mean squared update is <= eps^2.
    inner_iterations: iterations between two median filterings.
    outer_iterations: maximum number of median filterings per warp.
    scale_step: downsampling factor between levels (0 < scale_step < 1).
    gamma: weight of the illumination-change term (0 disables it, as OpenCV).
    median_filtering: median window (odd; 0 or 1 disables it).
    use_initial_flow: start from ``initial_flow`` (downsampled to the coarsest level).
    interpolation: warping interpolation, "bicubic" (OpenCV) or "bilinear".
    presmooth: Gaussian pre-smoothing before each downsampling (IPOL); OpenCV has none.

  Returns:
    (H, W, 2) float32 flow (x, y) in pixels: frame0(y, x) ~ frame1(y + f[..., 1], x + f[..., 0]).
  """
  frame0 = jnp.asarray(frame0, jnp.float32)
  frame1 = jnp.asarray(frame1, jnp.float32)
  if use_initial_flow:
    if initial_flow is None:
      raise ValueError("use_initial_flow=True needs initial_flow")
    initial_flow = jnp.asarray(initial_flow, jnp.float32)
  else:
    initial_flow = None
  return _tvl1(frame0, frame1, initial_flow, tau=float(tau), lambda_=float(lambda_),
               theta=float(theta), nscales=int(nscales), warps=int(warps),
               epsilon=float(epsilon), inner_iterations=int(inner_iterations),
               outer_iterations=int(outer_iterations), scale_step=float(scale_step),
               gamma=float(gamma), median_filtering=int(median_filtering),
               interpolation=str(interpolation), presmooth=bool(presmooth))


@functools.partial(
    jax.jit,
    static_argnames=("tau", "lambda_", "theta", "nscales", "warps", "epsilon",
                     "inner_iterations", "outer_iterations", "scale_step", "gamma",
                     "median_filtering", "interpolation", "presmooth"))
def _tvl1(frame0, frame1, initial_flow, *, tau, lambda_, theta, nscales, warps, epsilon,
          inner_iterations, outer_iterations, scale_step, gamma, median_filtering,
          interpolation, presmooth):
  """Jitted body of `tvl1` (float32 images; initial_flow is None or (H, W, 2))."""
  if frame0.ndim != 2 or frame0.shape != frame1.shape:
    raise ValueError(f"expected two (H, W) grey images of one shape, got {frame0.shape} "
                     f"and {frame1.shape}")
  if not 0.0 < scale_step < 1.0:
    raise ValueError(f"scale_step must be in (0, 1), got {scale_step}")
  if nscales < 1 or warps < 1:
    raise ValueError("nscales and warps must be >= 1")
  if median_filtering > 1 and median_filtering % 2 == 0:
    raise ValueError(f"median_filtering must be odd, got {median_filtering}")
  if interpolation not in ("bicubic", "bilinear"):
    raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}")
  height, width = frame0.shape
  if height < 3 or width < 3:
    raise ValueError(f"images must be at least 3x3, got {frame0.shape}")
  i0, i1 = frame0, frame1

  sizes = _pyramid_sizes(height, width, nscales, scale_step)
  sigma = 0.6 * math.sqrt(scale_step ** -2 - 1.0) if presmooth else 0.0
  down = []  # (rows, cols) matrices from level s-1 to level s.
  for (h0, w0), (h1, w1) in zip(sizes[:-1], sizes[1:]):
    rows = _linear_matrix(h1, h0, 1.0 / scale_step) @ _gaussian_matrix(h0, sigma)
    cols = _linear_matrix(w1, w0, 1.0 / scale_step) @ _gaussian_matrix(w0, sigma)
    down.append((rows, cols))
  pyr0, pyr1 = [i0], [i1]
  for rows, cols in down:
    pyr0.append(_resize(pyr0[-1], rows, cols))
    pyr1.append(_resize(pyr1[-1], rows, cols))

  nvar = 3 if gamma != 0.0 else 2
  hc, wc = sizes[-1]
  if initial_flow is not None:
    if initial_flow.shape != (height, width, 2):
      raise ValueError(f"initial_flow must be {(height, width, 2)}, got {initial_flow.shape}")
    u = jnp.moveaxis(initial_flow, -1, 0)
    for (h0, w0), (h1, w1) in zip(sizes[:-1], sizes[1:]):
      rows = _linear_matrix(h1, h0, 1.0 / scale_step)
      cols = _linear_matrix(w1, w0, 1.0 / scale_step)
      u = jax.vmap(lambda c, r=rows, k=cols: _resize(c, r, k))(u) * scale_step
    if nvar == 3:
      u = jnp.concatenate([u, jnp.zeros((1, hc, wc), jnp.float32)])
  else:
    u = jnp.zeros((nvar, hc, wc), jnp.float32)

  scale_kwargs = dict(tau=tau, lambda_=lambda_, theta=theta, warps=warps, epsilon=epsilon,
                      inner_iterations=inner_iterations, outer_iterations=outer_iterations,
                      gamma=gamma, median_filtering=median_filtering,
                      interpolation=interpolation)
  for s in range(len(sizes) - 1, -1, -1):
    u = _one_scale(pyr0[s], pyr1[s], u, **scale_kwargs)
    if s == 0:
      break
    (h0, w0), (h1, w1) = sizes[s], sizes[s - 1]
    # Upsample to the finer level (the actual size ratio sets the sampling positions)
    # and scale the displacement by 1 / scale_step (not the illumination term).
    rows = _linear_matrix(h1, h0, h0 / h1)
    cols = _linear_matrix(w1, w0, w0 / w1)
    u = jax.vmap(lambda c, r=rows, k=cols: _resize(c, r, k))(u)
    factor = jnp.array([1.0 / scale_step] * 2 + [1.0] * (nvar - 2), jnp.float32)
    u = u * factor[:, None, None]
  return jnp.stack([u[0], u[1]], axis=-1)
