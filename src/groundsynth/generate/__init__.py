"""Synthetic data generation: grounded (map -> image) and ungrounded (unconditional generators
labelled afterwards with :mod:`.pseudo_label`) samples, written in the data contract.

Generator kinds (registry: :data:`.training.GENERATOR_KINDS`):

* ``conditional`` (:mod:`.conditional`): SPADE generator with 3-D noise, U-Net (OASIS) or
  PatchGAN discriminator (:mod:`.conditional.discriminators`), hinge / OASIS / VGG / L1
  losses (:mod:`.conditional.losses`). Grounded: the map comes first.
* ``diffusion`` (:mod:`.diffusion`): diffusers ``UNet2DModel`` trained as a DDPM, sampled
  with DDIM or DPM-Solver. Ungrounded: images first, labels later.
* ``conditional-diffusion`` (:mod:`.conditional_diffusion`): the same U-Net given the map as
  one-hot input channels, with map dropout and classifier-free guidance. Grounded.

Pieces:

* :mod:`.training` -- ``train_generator`` (``groundsynth train-generator``): Lightning
  training, checkpoints with exact resume (:mod:`.checkpoint`), sample grids, losses;
* :mod:`.curves` -- learning curves on held-out real data while training (label fidelity
  vs its real ceiling, FD vs real halves), early stop on a plateau;
* :mod:`.layouts` -- maps to paint: ``train-masks``, ``augmented``, composition ``target``;
* :mod:`.sampling` -- ``generate_dataset`` (``groundsynth generate``): resumable, seeded,
  here or as Ray tasks (:mod:`.sample_chunks`);
* :mod:`.importer` -- ``import_samples`` (``groundsynth import-samples``): external images;
* :mod:`.pseudo_label` -- ``groundsynth pseudo-label``: masks for unlabelled images;
* :mod:`.writer` -- how synthetic datasets are laid out (incl. "no mask yet").

Modules importing torch are not imported here: ``import groundsynth.generate`` is cheap.
"""
