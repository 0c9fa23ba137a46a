"""
Correlation operators that export to ONNX without runtime-weight convolutions.

The usual Siamese correlations run ``F.conv2d(search, template)``: the convolution takes its
weights from a tensor computed at run time. ONNX can express that, but TensorRT's ONNX parser
rejects a Conv whose weight input is not a constant, so a graph exported that way cannot become
an engine. The operators here compute the same numbers with MatMul, or with Slice, Mul and Add
while being exported: after export every Conv in the graph has constant weights (check with
``nets.export.runtime_weight_convs``).
"""
from __future__ import annotations

import torch
from torch.nn.functional import conv2d, pad

__all__ = ['xcorr_depthwise', 'xcorr_depthwise_conv', 'xcorr_depthwise_slices',
           'xcorr_pixelwise']


def _exporting() -> bool:
    """Tell whether torch is tracing the code for export (ONNX tracer, torch.export)."""
    is_exporting = getattr(getattr(torch, 'compiler', None), 'is_exporting', None)
    return bool(torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()
                or (is_exporting is not None and is_exporting()))


def xcorr_depthwise(x: torch.Tensor, z: torch.Tensor, padding: int = 0) -> torch.Tensor:
    """
    Depthwise cross-correlation of search features ``x`` with template features ``z``.

    Same semantics as pysot's ``xcorr_depthwise`` (a grouped ``F.conv2d`` with one group per
    batch item and channel)::

        out[b, c, i, j] = sum_{u, v} xp[b, c, i + u, j + v] * z[b, c, u, v]

    where ``xp`` is ``x`` zero-padded by ``padding`` pixels on every side.

    While being traced for export it is written as a sum of h * w shifted slices of ``x``
    scaled by one template value each (ONNX Pad, Slice, Mul, Add), so the exported graph has no
    Conv with run-time weights; shapes must be static then. In eager mode it runs the grouped
    convolution, which is faster. The two agree to float rounding (tested to 1e-5).

    :param x: search features (B, C, H, W).
    :param z: template features (B, C, h, w) with h <= H + 2 * padding and w <= W + 2 * padding.
    :param padding: zero padding of ``x`` on each side (NanoTrack v3 uses 1, pysot uses 0).
    :return: (B, C, H + 2 * padding - h + 1, W + 2 * padding - w + 1), dtype of ``x``.
    """
    if x.dim() != 4 or z.dim() != 4:
        raise ValueError(f'xcorr_depthwise needs 4-D tensors, got x {tuple(x.shape)} and '
                         f'z {tuple(z.shape)}')
    if x.shape[0] != z.shape[0] or x.shape[1] != z.shape[1]:
        raise ValueError(f'xcorr_depthwise: batch/channels differ: x {tuple(x.shape)}, '
                         f'z {tuple(z.shape)}')
    if (int(z.shape[2]) > int(x.shape[2]) + 2 * padding
            or int(z.shape[3]) > int(x.shape[3]) + 2 * padding):
        raise ValueError(f'xcorr_depthwise: template {tuple(z.shape[2:])} is larger than the '
                         f'(padded) search features {tuple(x.shape[2:])} + 2 * {padding}')
    if _exporting():
        return xcorr_depthwise_slices(x, z, padding)
    return xcorr_depthwise_conv(x, z, padding)


def xcorr_depthwise_slices(x: torch.Tensor, z: torch.Tensor, padding: int = 0) -> torch.Tensor:
    """``xcorr_depthwise`` as Slice/Mul/Add only (the form that is exported)."""
    if padding:
        x = pad(x, (padding, padding, padding, padding))
    kh, kw = int(z.shape[2]), int(z.shape[3])
    oh, ow = int(x.shape[2]) - kh + 1, int(x.shape[3]) - kw + 1
    out = None
    for u in range(kh):
        for v in range(kw):
            term = x[:, :, u:u + oh, v:v + ow] * z[:, :, u:u + 1, v:v + 1]
            out = term if out is None else out + term
    return out


def xcorr_depthwise_conv(x: torch.Tensor, z: torch.Tensor, padding: int = 0) -> torch.Tensor:
    """``xcorr_depthwise`` as pysot computes it: one grouped conv with the template as weights."""
    b, c = int(x.shape[0]), int(x.shape[1])
    out = conv2d(x.reshape(1, b * c, x.shape[2], x.shape[3]),
                 z.reshape(b * c, 1, z.shape[2], z.shape[3]), padding=padding, groups=b * c)
    return out.reshape(b, c, out.shape[2], out.shape[3])


def xcorr_pixelwise(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """
    Pixel-wise correlation: every template position against every search position.

    ``out[b, u * w + v, i, j] = sum_c z[b, c, u, v] * x[b, c, i, j]`` for template features
    ``z`` (B, C, h, w) and search features ``x`` (B, C, H, W); the result is (B, h * w, H, W).
    One batched MatMul, as in NanoTrack / SiamGAT.
    """
    b, c, h, w = (int(s) for s in x.shape)
    if z.dim() != 4 or int(z.shape[0]) != b or int(z.shape[1]) != c:
        raise ValueError(f'xcorr_pixelwise: x {tuple(x.shape)} and z {tuple(z.shape)} must '
                         'share batch and channels')
    kernel = z.reshape(b, c, -1).transpose(1, 2)      # (B, h*w, C)
    search = x.reshape(b, c, h * w)                    # (B, C, H*W)
    return torch.matmul(kernel, search).reshape(b, -1, h, w)
