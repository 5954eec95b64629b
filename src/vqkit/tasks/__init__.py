"""Uses of a trained run beyond reconstruction, one module each (imported on demand, so a command
loads only what it needs, e.g. no scikit-learn for denoising):

  denoise    clean estimates from a run trained corrupted -> clean; noisy test images; scoring
  features   per-image code grids, bag-of-codes histograms, pooled continuous latents
  probe      linear-probe and k-NN accuracy of those features (and of raw pixels)
  codebook   what each code decodes to; usage overall and per class
  anomaly    per-image anomaly scores and their AUROC
  retrieval  nearest images by code-histogram similarity

The names of the result files they leave in a run folder live in vqkit.runs.layout.
"""
