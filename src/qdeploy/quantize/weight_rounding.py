"""Weight rounding fitted to data (GPTQ): choose each layer's integer weights for its output on real inputs, not
each weight for itself.

Rounding every weight to the nearest grid point is optimal weight by weight and poor layer by layer: the errors
add up in the output. GPTQ (Frantar et al. 2022, after Optimal Brain Quantization) rounds a layer's weights one
input column at a time and after each column moves the not-yet-rounded weights to cancel the output error so far,
using H = E[x x^T], the second moment of the layer's inputs (im2col patches for a convolution, one per channel for
a depthwise one) measured on the calibration images. The grid is the file's own: ORT's scales and zero points are
kept and the new integers stay inside the range ORT used for the tensor (so 7-bit weights stay 7-bit, and a kernel
that saturates beyond it is safe). The graph, its scales and its speed are unchanged; only integer weights move.

Measured on the ImageNet EfficientNet-Lite0 in ImageNet mode (bench/bias_correction.py: 1,000 upscaled CIFAR-10
+ 24 Kodak images, top-1 agreement with FP32, bias correction on): 8-bit per-channel weights alone (16-bit
activations) 91.0 % nearest -> 95.4 % GPTQ; the default recipe (7-bit weights, uint8 activations) 80.3 -> 86.0 %.

Works on the file ORT wrote, like bias correction (which runs after it, on the new integers): the float weights
and the layer inputs come from the pre-processed FP32 graph. Conv (ungrouped or depthwise, no dilation) and Gemm
are handled in QDQ and QOperator; anything else is counted as skipped and keeps ORT's rounding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from ..formats.sessions import cpu_session
from .qlayers import attr, find_layers, statistics_key

MAX_IMAGES = 64                 # calibration images whose layer inputs make H (each gives many patches)
POSITIONS = 256                 # output positions per image that enter H (a regular grid of them: at 112 x 112
                                # every 7th row and column; neighbouring patches overlap and add little)
OUTPUT_BYTES = 512 * 2**20      # layer inputs held at once while measuring H (the batch is sized to this)
DAMP = 0.01                     # H += DAMP * mean(diag H) * I (GPTQ's dampening)
BLOCK = 32                      # columns rounded between two updates of the remaining ones
MAX_COLUMNS = 1280              # wider layers (ResNet18's 3x3x512 convs: 4608) are solved in independent column
                                # chunks: the factorisation is cubic in the width (a 4608-wide H cost ~1.5 s each
                                # here), and 64 small images give such an H fewer samples than columns anyway

_cache: dict = {}               # one entry: (source graph, images) -> second moments; the auto search re-quantizes
                                # the same FP32 file with the same images many times


def _conv_geometry(node, w_shape) -> dict | None:
    """Kernel, strides, pads and kind (full / depthwise) of a Conv this pass can handle; None otherwise."""
    if attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "", 0):
        return None
    k = attr(node, "kernel_shape", list(w_shape[2:]))
    if len(k) != 2 or any(d != 1 for d in attr(node, "dilations", [1, 1])):
        return None
    group = attr(node, "group", 1)
    cout, cin_g = w_shape[0], w_shape[1]
    if group == 1:
        kind = "full"
    elif cin_g == 1 and group == cout:
        kind = "depthwise"
    else:
        return None
    return {"k": k, "s": attr(node, "strides", [1, 1]), "p": attr(node, "pads", [0, 0, 0, 0]), "kind": kind}


def _patches(x: np.ndarray, g: dict) -> np.ndarray:
    """(N, C, Ho', Wo', kh, kw) view of x's im2col patches (after padding) at up to ~POSITIONS output positions."""
    p = g["p"]
    if any(p):
        x = np.pad(x, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])))
    v = np.lib.stride_tricks.sliding_window_view(x, g["k"], axis=(2, 3))
    v = v[:, :, ::g["s"][0], ::g["s"][1]]
    step = int(np.ceil(np.sqrt(v.shape[2] * v.shape[3] / POSITIONS)))
    return v[:, :, step // 2::step, step // 2::step] if step > 1 else v


def _layer_chunks(g: dict | None, width: int) -> list[slice]:
    """The column ranges of a layer's rows that H is accumulated and GPTQ solved over, decided once for both: all of
    a depthwise conv's (its H is per channel, kernel-window wide), else _chunks of whole kernel windows."""
    if g is not None and g["kind"] == "depthwise":
        return [slice(0, width)]
    return _chunks(width, 1 if g is None else int(np.prod(g["k"])))


def _accumulate(h: list | None, x: np.ndarray, g: dict | None) -> tuple[list, int]:
    """Add this batch's sum of x x^T (per channel for a depthwise conv), one block per column chunk (_chunks);
    returns (blocks, samples). In float64: a float32 sum's last bits depend on the BLAS thread count, and a
    rounding decision must not (a file built in a one-thread Ray worker is byte-identical to one built here)."""
    x = x.astype(np.float64)
    if g is not None and g["kind"] == "depthwise":
        v = _patches(x, g)
        c, kk = v.shape[1], v.shape[4] * v.shape[5]
        add = np.empty((c, kk, kk))
        for c0 in range(0, c, 64):                  # channel chunks bound the patch copy
            X = np.ascontiguousarray(v[:, c0:c0 + 64].transpose(1, 0, 2, 3, 4, 5)).reshape(min(64, c - c0), -1, kk)
            add[c0:c0 + 64] = np.matmul(X.transpose(0, 2, 1), X)
        blocks, n = [add], v.shape[0] * v.shape[2] * v.shape[3]
    else:
        if g is None:                               # Gemm: one sample per image
            X = x.reshape(len(x), -1)
        else:
            v = _patches(x, g)                      # column order (C, kh, kw) = the weight's flattening
            X = np.ascontiguousarray(v.transpose(0, 2, 3, 1, 4, 5)).reshape(-1, v.shape[1] * v.shape[4] * v.shape[5])
        blocks, n = [X[:, c].T @ X[:, c] for c in _layer_chunks(g, X.shape[1])], len(X)
    if h is not None:
        for a, b in zip(h, blocks):
            a += b
    return (blocks if h is None else h), n


def second_moments(source: Path, calib, input_name: str, nodes: dict, fixed: dict | None = None,
                   batch_one: bool = False) -> dict:
    """E[x x^T] of each node's input patches over the calibration images (name -> blocks, one per column chunk):
    nodes maps a node name to (node, conv geometry or None for a Gemm). Cached for the last (graph, images): the auto search quantizes the
    same pre-processed graph with the same images many times (other formats, kernels, nodes kept in FP32)."""

    key = statistics_key(source, calib, fixed, batch_one)
    if _cache.get("key") == key and set(nodes) <= set(_cache["value"]):
        return _cache["value"]
    m = onnx.load(str(source))
    have = {o.name for o in m.graph.output}
    tensors = list(dict.fromkeys(n.input[0] for n, _ in nodes.values()))
    for t in tensors:
        if t not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = False
    sess = cpu_session(m.SerializeToString(), opts)
    names = [o.name for o in sess.get_outputs()]
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    batch, i = 1, 0
    while i < len(calib):
        x = np.asarray(calib[i:i + batch], dtype=np.float32)
        outs = dict(zip(names, sess.run(None, {input_name: x, **(fixed or {})})))
        for name, (node, g) in nodes.items():
            sums[name], n = _accumulate(sums.get(name), outs[node.input[0]], g)
            counts[name] = counts.get(name, 0) + n
        if i == 0 and not batch_one:
            per_image = sum(outs[t].nbytes for t in tensors) / len(x)
            batch = int(max(1, min(16, OUTPUT_BYTES // max(per_image, 1))))
        i += len(x)
        del outs
    for k, blocks in sums.items():
        for b in blocks:
            b /= counts[k]
    value = sums
    _cache.clear()
    _cache.update(key=key, value=value)
    return value


def _rows(kind: str, node, w: np.ndarray) -> np.ndarray:
    """The weight as (output channel, input column) rows."""
    if kind == "Gemm":
        return w if attr(node, "transB", 0) else w.T
    return w.reshape(w.shape[0], -1)


def _unrows(kind: str, node, rows: np.ndarray, shape) -> np.ndarray:
    if kind == "Gemm":
        return rows if attr(node, "transB", 0) else rows.T
    return rows.reshape(shape)


def _upper_factor(h: np.ndarray) -> np.ndarray:
    """Upper triangular V with H = V V^T, for a stack H (K, D, D): the Cholesky factor of H with rows and columns
    reversed, L, gives H = (J L J)(J L J)^T. GPTQ's factor of H^-1 is U = V^-1; the loop below uses V itself."""
    rev = slice(None, None, -1)
    return np.ascontiguousarray(np.linalg.cholesky(h[..., rev, rev])[..., rev, rev])


def _damped_factors(h: np.ndarray, damp: float) -> np.ndarray:
    """V for each H of the stack after GPTQ's dampening H += damp * mean(diag H) * I, the dampening raised tenfold
    (up to three times) for an H that is not yet positive definite; an input that never fires (diag <= 0) gets a
    unit diagonal first, so it is rounded plainly."""
    d = h.shape[-1]
    eye = np.eye(d)
    diag = np.diagonal(h, axis1=-2, axis2=-1)
    h = h + eye * (diag <= 0)[..., None]
    mean_diag = np.diagonal(h, axis1=-2, axis2=-1).mean(-1)
    try:
        return _upper_factor(h + (damp * mean_diag)[:, None, None] * eye)
    except np.linalg.LinAlgError:
        pass
    out = np.empty_like(h)
    for k in range(len(h)):                         # each H on its own, as many bumps as it needs
        for attempt in range(4):
            try:
                out[k] = _upper_factor((h[k] + damp * 10 ** attempt * mean_diag[k] * eye)[None])[0]
                break
            except np.linalg.LinAlgError:
                continue
        else:
            raise np.linalg.LinAlgError("H not positive definite even with dampening")
    return out


def gptq_stack(w: np.ndarray, h: np.ndarray, scale: np.ndarray, zp: np.ndarray, lo: int, hi: int,
               damp: float = DAMP) -> np.ndarray:
    """GPTQ on K independent problems at once: integer rows for float rows w (K, R, D) on the grids
    (q - zp) * scale (scale, zp: (K, R), per row), q in [lo, hi], minimising (w - wq) H_k (w - wq)^T per row with
    H (K, D, D). K is a layer's column chunks (one H each), or a depthwise conv's channels (R = 1).

    GPTQ rounds column j of the weight after moving it by the errors of the columns before: in its usual form
    w_j -= sum_{k<j} e_k U_kj, e_k = (w_k - wq_k) / U_kk, with H^-1 = U^T U. Written with V = U^-1 (H = V V^T, one
    Cholesky and no inverse) the same recursion is w_j = w0_j + (sum_{k<j} d_k V_kj) / V_jj, d_k = w0_k - wq_k the
    plain rounding error of column k (E U = D gives E = D V and V_jj U_jj = 1). The columns go in blocks: the sum
    over earlier blocks is one batched matrix product a block, the sum inside a block a rank-1 update a column."""
    kk, r, d_all = w.shape
    v = _damped_factors(np.asarray(h, dtype=np.float64), damp)
    w0 = np.ascontiguousarray(np.asarray(w, dtype=np.float64).transpose(0, 2, 1))    # (K, D, R): columns as rows
    s = np.where(scale == 0, 1.0, scale).astype(np.float64).reshape(kk, r)
    inv_s = 1.0 / s
    z = np.asarray(zp, dtype=np.float64).reshape(kk, r)
    inv_diag = 1.0 / np.diagonal(v, axis1=-2, axis2=-1)                              # (K, D)
    acc = np.zeros_like(w0)                         # sum_{k<j} d_k V_kj, column by column
    err = np.empty_like(w0)                         # d_j
    q = np.empty((kk, d_all, r))
    col = np.empty((kk, r))
    for b0 in range(0, d_all, BLOCK):
        b1 = min(b0 + BLOCK, d_all)
        for j in range(b0, b1):
            np.multiply(acc[:, j], inv_diag[:, j, None], out=col)
            col += w0[:, j]
            qj = q[:, j]
            np.multiply(col, inv_s, out=qj)
            qj += z
            np.rint(qj, out=qj)
            np.clip(qj, lo, hi, out=qj)
            ej = err[:, j]
            np.subtract(qj, z, out=ej)
            ej *= s
            np.subtract(w0[:, j], ej, out=ej)
            if j + 1 < b1:
                acc[:, j + 1:b1] += v[:, j, j + 1:b1, None] * ej[:, None, :]
        if b1 < d_all:
            acc[:, b1:] += np.matmul(v[:, b0:b1, b1:].transpose(0, 2, 1), err[:, b0:b1])
    return q.transpose(0, 2, 1).astype(np.int64)


def gptq(w: np.ndarray, h: np.ndarray, scale: np.ndarray, zp: np.ndarray, lo: int, hi: int,
         damp: float = DAMP) -> np.ndarray:
    """Integer rows for float rows w (R, D) on the grid (q - zp) * scale (per row), q in [lo, hi], minimising
    (w - wq) H (w - wq)^T per row: H (D, D) shared by the rows, or (R, D, D) one per row (depthwise)."""
    r = w.shape[0]
    if h.ndim == 3:                                 # one problem per row
        return gptq_stack(w[:, None, :], h, np.asarray(scale).reshape(r, 1), np.asarray(zp).reshape(r, 1), lo, hi,
                          damp)[:, 0, :]
    return gptq_stack(w[None], h[None], np.asarray(scale).reshape(1, r), np.asarray(zp).reshape(1, r), lo, hi,
                      damp)[0]


def _chunks(width: int, window: int) -> list[slice]:
    """Column ranges solved together: all of them up to MAX_COLUMNS, else equal chunks of whole kernel windows."""
    if width <= MAX_COLUMNS:
        return [slice(0, width)]
    n = -(-width // (MAX_COLUMNS // window * window))
    step = -(-width // n // window) * window
    return [slice(a, min(a + step, width)) for a in range(0, width, step)]


def _stacked(a: np.ndarray, cols: list[slice], depthwise: bool) -> np.ndarray:
    """(R, D) rows as the stacks GPTQ solves at once, (K, R, D): the column ranges `cols` side by side, or a depthwise
    conv's channels as R stacks of one row."""
    return a[:, None, :] if depthwise else np.stack([a[:, c] for c in cols])


def _unstack(out: np.ndarray, qs: np.ndarray, cols: list[slice], depthwise: bool) -> None:
    """Stacks qs (K, R, D) written back into the rows `out` (R, D): _stacked's inverse."""
    if depthwise:
        out[:] = qs[:, 0, :]
        return
    for k, c in enumerate(cols):
        out[:, c] = qs[k]


def _problems(rows: np.ndarray, blocks: list, chunks: list[slice], depthwise: bool):
    """A layer's GPTQ problems as stacks solved at once: (column ranges, w (K, R, D), H (K, D, D), row index (K, R)):
    a depthwise conv's channels (one row and one H each), else the column chunks of equal width (one H each)."""
    r = rows.shape[0]
    if depthwise:
        yield chunks, _stacked(rows, chunks, True), blocks[0], np.arange(r)[:, None]
        return
    for width in dict.fromkeys(c.stop - c.start for c in chunks):
        group = [(c, h) for c, h in zip(chunks, blocks, strict=True) if c.stop - c.start == width]
        cols = [c for c, _ in group]
        yield (cols, _stacked(rows, cols, False), np.stack([h for _, h in group]),
               np.broadcast_to(np.arange(r), (len(group), r)))


def _proxy_error(e: np.ndarray, h: np.ndarray) -> float:
    """sum over rows of e H e^T for stacks e (K, R, D), H (K, D, D): with e = w - wq, the layer's mean squared output
    error on the calibration inputs (over column chunks: the block-diagonal part of H, the part GPTQ solves)."""
    return float((np.matmul(e, h) * e).sum())


def _round_layer(rows, blocks, chunks, depthwise, scale, zp, lo, hi, old):
    """GPTQ's integer rows for one layer, and the output-error proxy of ORT's rows (old) and of GPTQ's."""
    new = np.empty_like(old)
    e_old = e_new = 0.0
    for cols, w, h, idx in _problems(rows, blocks, chunks, depthwise):
        s, z = scale[idx], zp[idx]
        qs = gptq_stack(w, h, s, z, lo, hi)
        _unstack(new, qs, cols, depthwise)
        deq = lambda qi: (qi - z[..., None]) * s[..., None]  # noqa: E731
        e_old += _proxy_error(w - deq(_stacked(old, cols, depthwise)), h)
        e_new += _proxy_error(w - deq(qs), h)
    return new, e_old, e_new


def round_weights(source: Path, quantized: Path, calib, input_name: str, fixed: dict | None = None,
                  batch_one: bool = False, max_images: int = MAX_IMAGES) -> dict:
    """Rewrite the integer weights of `quantized` (in place) by GPTQ on `source`'s layer inputs over the first
    `max_images` calibration images. Returns what was done: layers, skipped, the share of integer weights that
    differ from ORT's nearest rounding, and the layers' summed output-error proxy (w - wq) H (w - wq)^T before and
    after (GPTQ lowers it; a layer where it would not is left as ORT wrote it)."""

    src = onnx.load(str(source))
    float_w = {i.name: numpy_helper.to_array(i) for i in src.graph.initializer}
    q = onnx.load(str(quantized))
    inits = {i.name: i for i in q.graph.initializer}
    layers, skipped = find_layers(src, q)
    plans = []
    for ly in layers:
        w_int = numpy_helper.to_array(inits[ly.w_name])
        w = float_w[ly.source.input[1]]
        g = _conv_geometry(ly.source, w.shape) if ly.kind == "Conv" else None
        out_axis = 0 if ly.kind == "Conv" or attr(ly.node, "transB", 0) else 1
        per_axis = ly.w_scale.size > 1
        if w_int.shape != w.shape or (ly.kind == "Conv" and g is None) or (per_axis and ly.axis != out_axis):
            skipped += 1
            continue
        plans.append((ly, w_int, w, g))
    if not plans:
        return {"method": "gptq", "layers": 0, "skipped": skipped}
    images = calib[:max_images]
    h_all = second_moments(source, images, input_name, {ly.source.name: (ly.source, g) for ly, _, _, g in plans}, fixed,
                           batch_one)
    total = changed = 0
    before = after = 0.0
    done = 0
    for ly, w_int, w, g in plans:
        rows = _rows(ly.kind, ly.node, w)
        r = rows.shape[0]
        scale = np.broadcast_to(ly.w_scale.astype(np.float64).reshape(-1), (r,)) if ly.w_scale.size > 1 else \
            np.full(r, float(ly.w_scale.reshape(-1)[0]))
        zp = np.broadcast_to(ly.w_zp.astype(np.float64).reshape(-1), (r,)) if ly.w_zp.size > 1 else \
            np.full(r, float(ly.w_zp.reshape(-1)[0]))
        blocks = h_all[ly.source.name]
        chunks = _layer_chunks(g, rows.shape[1])
        old = _rows(ly.kind, ly.node, w_int).astype(np.int64)
        try:
            new, e_old, e_new = _round_layer(rows, blocks, chunks, g is not None and g["kind"] == "depthwise", scale,
                                             zp, int(w_int.min()), int(w_int.max()), old)
        except np.linalg.LinAlgError:
            skipped += 1
            continue
        if e_new >= e_old:          # never make a layer worse on its own inputs
            new, e_new = old, e_old
        before, after = before + e_old, after + e_new
        total += new.size
        changed += int((new != old).sum())
        done += 1
        inits[ly.w_name].CopyFrom(numpy_helper.from_array(
            _unrows(ly.kind, ly.node, new, w_int.shape).astype(w_int.dtype), ly.w_name))
    onnx.save(q, str(quantized))
    return {"method": "gptq", "layers": done, "skipped": skipped, "changed_fraction": changed / max(total, 1),
            "output_error_before": before, "output_error_after": after, "calibration_images": len(images)}
