"""Row-wise int8 for CPU: int8 weights and int8 activations with one scale per row (token).

The transform rewrites every MatMul of the fp32 graph that has a constant 2-D weight:

    x (..., K) --Reshape--> (rows, K) --QuantizeLinear(axis 0, scale = rowmax|x| / 127)--> u8
    u8 x int8 W --com.microsoft.MatMulIntegerToFloat (row scales x per-column weight scales)-->
    (rows, N) [+ Gemm: the fp32 outlier channels' product] --Reshape--> (..., N)

Why row-wise: a row's scale depends on that row only, so a row's int8 product does not depend on
its batch partners (`int8-dynamic` computes one scale per tensor over the whole batch).
Padding must not move the fp32 parts either: a change of ~1e-7 flips a rounding now and then,
and a trained model amplifies the flips, so the graph's sums over tokens are made exact first
(toolchain/export/padding_exact/): each row's real tokens are moved to its front, where ORT's
attention computes them the same at any padding, and masked means are rewritten. MatMuls that
read the same tensor (q/k/v, gate/up) share one quantisation.

Why smoothing (SmoothQuant, Xiao et al. 2023): real decoder activations have a few outlier
channels, which set every row's scale and crush the rest to a few levels. Each quantised input
is divided per channel by s_j = max|x_j|^alpha / max|W_j,:|^(1 - alpha), and the weight rows are
multiplied by s_j: exact in real arithmetic, it moves the outliers into the weights, which
per-column scales absorb. max|x_j| is calibrated at export on CALIBRATION_FILE's feeds. Where the
input is the normalised output of an RMSNorm whose weight nothing else reads, 1/s is folded into
that weight (no extra op); otherwise a Mul does it.

Why some groups stay fp32 (``target_cosine``): on real weights a few layers' inputs (the first
layers', where massive activations arise) do not survive int8 even smoothed; which ones is
measured per model at export (fp32_search.py: choose_paths). The same search gives outlier channels
only to the groups that need them: their fp32 product costs ~12 % of the int8 graph's time
(SmolLM2 m3, 8x128), and some models need them nowhere (m3: worst cosine 0.99919 without any).

Why GPTQ (``weight_rounding: gptq``; Frantar et al. 2023): 7-bit weights (``reduce_range``, for
CPUs without VNNI) cost more accuracy than 8-bit activations. Rounding each input channel's
weights in turn and spreading its error over the channels not yet rounded, weighted by the
calibration rows' X^T X, moves the products several times less than rounding to nearest where
activations are correlated (decoder activations are), at no run-time cost. On SmolLM2 m5 it cut
the groups the search keeps fp32 from 68 to 43. What stays fp32 there is the first twelve layers
of the bidirectional variants: weight rounding alone in those layers (fp32 activations) already
moves some random-id rows below cosine 0.99 (both in benchmarks/results/history/
export_fusion_measurements.md, "GPTQ rounding of the 7-bit weights").

One module per concern: statistics.py (calibrated max |x| and X^T X), smoothing.py (scales,
outlier channels, the fold into RMSNorms), gptq.py (weight rounding), graph_edit.py and
rewrite.py (the graph rewrite), fp32_search.py (which groups stay fp32), settings.py (the
profile's ``quantize:`` settings). The transform that runs them is
toolchain/export/transforms/rowwise.py.
"""

