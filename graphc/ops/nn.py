"""Neural-network ops: linear, convolution, pooling, normalisation, attention, embedding.

The contract (names, operands, attributes) that the front end (graphc.nn.functional), the passes and
the backends agree on. All float ops require operands of one float dtype.

  linear(x, weight, bias?)                         x[..., K] weight[N, K] bias[N] -> [..., N]
  bilinear(x1, x2, weight, bias?)                  x1[..., I1] x2[..., I2] weight[O, I1, I2] -> [..., O]
  conv[stride, padding, dilation, groups](x, weight, bias?)
        1-d or 2-d by weight rank: x[N, C, *S] weight[OC, C/groups, *K] -> [N, OC, *S'];
        stride/padding/dilation are int lists of len(S); padding is symmetric (the front end turns
        'same' with an even kernel into a `pad` op first)
  conv_transpose[stride, padding, output_padding, dilation, groups](x, weight, bias?)
        x[N, C, *S] weight[C, OC/groups, *K] -> [N, OC, *S'] (PyTorch ConvTranspose semantics)
  max_pool2d[kernel, stride, padding, dilation, ceil_mode](x)           x[N, C, H, W]
  avg_pool2d[kernel, stride, padding, ceil_mode, count_include_pad, divisor_override?](x)
  adaptive_avg_pool2d[output_size](x)                                   x[N, C, H, W]
  batch_norm[eps](x, mean, var, weight?, bias?)    eval mode; x[N, C, *], params [C]
  layer_norm[ndim, eps](x, weight?, bias?)         normalise over the last `ndim` dims
  group_norm[num_groups, eps](x, weight?, bias?)   x[N, C, *], weight/bias [C]
  rms_norm[ndim, eps](x, weight?)                  eps resolved by the front end (finfo eps if None)
  sdpa[scale, is_causal](q, k, v, mask?)           q[..., Tq, D] k[..., Tk, D] v[..., Tk, Dv];
        mask is an additive float mask broadcastable to [..., Tq, Tk] (the front end converts bool
        masks with where(mask, 0, -inf)); scale is always resolved (1/sqrt(D) by default)
  embedding(indices, weight)                       indices int64/int32 [...], weight [V, D] -> [..., D]
  dropout[p](x)                                    inference semantics: identity (removed by passes)
  identity(x)                                      identity (importers produce it; removed by passes)
"""
