"""How each ATen op behaves when its input is a sequence of T spiking steps folded into the batch.

* FOLDABLE: linear (or affine) and per-sample, so running it on all T*B rows at once gives the same
  T-step average as the ANN gives on the average input; no state, no change.
* RUNNING_MEAN: non-linear and not spiking; fed running means (`sdm.snn.temporal.TemporalMean`).
* Activations (`calibration.graph.ACTIVATIONS`) become neurons.

Anything else stops the conversion with the node's name, so no op is ever run in a way whose
temporal meaning nobody checked.
"""

from __future__ import annotations

import operator

import torch

aten = torch.ops.aten

FOLDABLE = {
    aten.conv2d.default, aten.conv1d.default, aten.conv_transpose2d.input, aten.linear.default,
    aten.add.Tensor, aten.sub.Tensor, aten.neg.default,
    aten.cat.default, aten.view.default, aten.reshape.default, aten._unsafe_view.default,
    aten.transpose.int, aten.permute.default, aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims,
    aten.flatten.using_ints, aten.contiguous.default, aten.clone.default, aten.alias.default,
    aten.detach.default, aten.dropout.default, aten.pad.default, aten.constant_pad_nd.default,
    aten.upsample_nearest2d.vec, aten.upsample_nearest2d.default, aten.upsample_bilinear2d.vec,
    aten.avg_pool2d.default, aten.adaptive_avg_pool2d.default,
    aten.to.dtype, aten.to.dtype_layout, aten._to_copy.default, aten.type_as.default,
    aten.slice.Tensor, aten.select.int, aten.split.Tensor, aten.chunk.default, operator.getitem,
    aten.mean.dim, aten.sum.dim_IntList, aten.batch_norm.default,
    # Linear only in their one step-varying operand: checked in `is_foldable`.
    aten.mul.Tensor, aten.mul.Scalar, aten.div.Tensor, aten.div.Scalar,
}

RUNNING_MEAN = {
    aten.group_norm.default, aten.layer_norm.default, aten.scaled_dot_product_attention.default,
    aten.softmax.int, aten._softmax.default, aten.bmm.default, aten.baddbmm.default, aten.matmul.default,
    aten.mm.default, aten.mul.Tensor, aten.div.Tensor, aten.exp.default, aten.log.default, aten.sqrt.default,
    aten.rsqrt.default, aten.pow.Tensor_Scalar, aten.tanh.default, aten.sigmoid.default, aten.max_pool2d.default,
}

# Ops whose `dim` argument must not touch dim 0, where the T steps are folded into the batch.
_DIM_ARG = {aten.cat.default: 1, aten.slice.Tensor: 1, aten.select.int: 1, aten.split.Tensor: 2,
            aten.chunk.default: 2, aten.mean.dim: 1, aten.sum.dim_IntList: 1, aten.flatten.using_ints: 1}


def touches_batch_dim(node) -> bool:
    """Whether the op reduces, splits or concatenates along dim 0 (it would mix spiking steps)."""
    if node.target not in _DIM_ARG:
        return False
    i = _DIM_ARG[node.target]
    dims = node.args[i] if len(node.args) > i else node.kwargs.get("dim", 0)
    dims = dims if isinstance(dims, (list, tuple)) else [dims]
    return any(d == 0 for d in dims)


def is_foldable(node, sequence_operands: int, sequence_positions: set[int]) -> bool:
    """Foldable ops, where products and quotients are linear in their single step-varying operand."""
    if node.target not in FOLDABLE:
        return False
    if node.target in (aten.mul.Tensor, aten.mul.Scalar):
        return sequence_operands <= 1
    if node.target in (aten.div.Tensor, aten.div.Scalar):
        return sequence_positions <= {0}
    return True
