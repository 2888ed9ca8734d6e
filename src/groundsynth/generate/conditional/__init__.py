"""The grounded generator: land-cover map (+ noise) -> image.

* :mod:`.spade` -- SPADE generator with OASIS-style 3-D noise;
* :mod:`.discriminators` -- ``unet`` (OASIS, per-pixel classes + fake) and ``patchgan``;
* :mod:`.losses` -- hinge, OASIS, VGG19 perceptual (local weights only), feature matching
  on a real-trained segmenter's encoder, L1;
* :mod:`.config` -- :class:`~.config.ConditionalConfig`;
* :mod:`.module` -- the Lightning training module (manual optimisation, EMA).
"""
