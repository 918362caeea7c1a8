"""Weight-analysis measures, one pure module each (tensors in, numbers out; leading dimensions are a batch):

* :mod:`.linalg` — batched SVDs: dense, and the low-rank path for a factored ΔW = B A (QR of the factors,
  then a q×q SVD), numerical rank.
* :mod:`.intruders` — intruder dimensions (Shuttleworth et al. 2024; PEFT's ``reduce_intruder_dimension``).
* :mod:`.effective_rank` — rank at 90% of the spectrum's energy (Biderman et al. 2024), stable rank.
* :mod:`.subspace` — subspace similarity φ(A, B, i, j) (Hu et al., LoRA §7).
* :mod:`.amplification` — amplification factor ‖ΔW‖_F / ‖Uᵀ W0 V‖_F (LoRA §7).
* :mod:`.alignment` — share of ΔW's energy in W0's top-r singular subspace.

Definitions and references: docs/spectra.md.
"""
