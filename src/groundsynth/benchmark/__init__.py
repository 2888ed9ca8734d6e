"""Segmentation benchmark: models, streaming metrics, Lightning training, result tables.

Modules (import them directly; each needs the ``train`` extra):

* :mod:`.metrics` -- confusion-matrix segmentation metrics (pure stages, numpy or torch);
* :mod:`.streaming` -- the same as a torchmetrics ``Metric`` (exact under DDP);
* :mod:`.model` -- architecture registry over segmentation_models_pytorch, segmenter
  checkpoints (:func:`~.model.save_segmenter` / :func:`~.model.load_segmenter`), encoder
  features;
* :mod:`.data` -- training regimes (``real,synthetic:0.5``) and the Lightning data module;
* :mod:`.lightning_module` -- the LightningModule (loss, optimiser, metrics);
* :mod:`.interrupt` -- Ctrl-C inside a Lightning call handed back as ``KeyboardInterrupt``;
* :mod:`.learning` -- the pixel floor of each training set, and whether a run beats it;
* :mod:`.results` -- per-run rows, mean / std / 95 % CI across seeds, CSV / Markdown / JSON;
* :mod:`.segmentation` -- :func:`~.segmentation.run_segmentation_benchmark`.
"""
