"""Model sizes and step budgets of the transfer experiment, per preset.

``tiny``: tests (seconds); ``small``: the CPU demo (minutes; every figure in its comments
measured on the demo's region A); ``full``: the paper-scale setting for a GPU.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["PRESETS", "Preset", "generator_model", "generator_steps"]

Preset = Literal["tiny", "small", "full"]

#: Model sizes and step counts per preset. ``tiny``: tests (seconds); ``small``: the CPU demo
#: (minutes); ``full``: the paper-scale setting for a GPU.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "spade": {"width": 8, "max_channels": 32, "depth": 3, "z_dim": 8, "spade_hidden": 16},
        "cond": {"d_width": 8, "d_max_channels": 32, "d_depth": 3, "fm_weight": 10.0},
        "cond_diffusion": {"mean_prior": True},
        "diffusion": {"block_out_channels": (8, 16), "layers_per_block": 1, "attention": False,
                      "num_train_timesteps": 100, "inference_steps": 4, "ema_decay": 0.0,
                      "beta_schedule": "squaredcos_cap_v2"},
        "uncond_diffusion": {"cascade_size": 16, "cascade_every": 2, "standardise": True},
        "generator_steps": 20, "diffusion_steps": 20, "generator_batch": 4,
        "segmenter": {"encoder": "tu-test_resnet", "encoder_depth": 3, "decoder_width": 4},
        "max_epochs": 1, "max_steps": 6, "batch_size": 4,
        "retrieval": {"model": "tiny", "image_size": 32, "context_length": 40, "max_steps": 4,
                      "max_epochs": 2, "batch_size": 8},
        "captioning": {"image_size": 32, "max_steps": 4, "max_epochs": 2, "batch_size": 8,
                       "metrics": ("bleu", "cider"), "max_new_tokens": 12},
        "utility": {},
    },
    "small": {
        # SPADE at 2e-3 for both networks: on the demo's region A (64 px, batch 8) label
        # fidelity read by the pixel floor 0.28 / 0.38 after 100 / 300 steps (1e-4 / 4e-4:
        # near chance at 200 steps)
        "spade": {"width": 16, "max_channels": 64, "depth": 3, "z_dim": 16, "spade_hidden": 32},
        # plus feature matching (weight 10) on a real-trained segmenter's encoder, with a
        # discriminator of width 8: on region A after 100 / 200 / 300 steps label fidelity read
        # by the pixel floor 0.39 / 0.49 / 0.59 (ceiling 0.86; without the term 0.26 / 0.35 /
        # 0.41 at width 16), descriptor FD 0.024 (0.081), 201 s instead of 257 s
        "cond": {"d_width": 8, "d_max_channels": 64, "d_depth": 3, "lr_g": 2e-3, "lr_d": 2e-3,
                 "fm_weight": 10.0},
        # v-prediction, a high learning rate, 100 timesteps on the cosine schedule: on region A
        # the map-conditioned U-Net reads back at 0.23 / 0.28 / 0.32 / 0.34 after 100-400 steps
        # (400 linear timesteps at 2e-3: 0.23 after 200); epsilon-prediction at 1e-4 samples
        # noise at this budget. With a linear schedule over few timesteps the last step keeps
        # much of the image, so sampling starts far from what the model was trained on.
        "diffusion": {"block_out_channels": (16, 32, 64), "layers_per_block": 1, "attention": False,
                      "num_train_timesteps": 100, "inference_steps": 10, "ema_decay": 0.99,
                      "prediction_type": "v_prediction", "lr": 3e-3,
                      "beta_schedule": "squaredcos_cap_v2"},
        # the grounded U-Net diffuses the residual from its map's class-mean colours: on region A
        # after 300 steps its samples read back at label fidelity 0.55-0.59 on val (ceiling
        # 0.86) with a descriptor FD of 0.07 (real halves 0.46); without the prior 0.23 and
        # 0.55, its shrub painted dark green and its barren grey-green
        "cond_diffusion": {"mean_prior": True},
        # the ungrounded U-Net is the detail stage of a cascade (generate.cascade): a 16 px
        # base (standardised, 4 GroupNorm groups in both, base at 1e-3) takes every step, the
        # 64 px U-Net every 7th, so it gets the grounded U-Net's 150 steps (1050 in all). On
        # region A, in the demo's FD features (seed-0 real segmenter; real halves 0.87, the
        # median of 8 splits; benchmarks/ungrounded_cascade.py, one thread): FD 3.28 in 181 s
        # against 4.93 in 104 s for one 64 px U-Net of 150 steps; with 16 groups 3.62;
        # 1000/1500/2000 steps with every 10th for the 64 px U-Net: 3.03 / 3.19 / 3.31 (noise
        # of ~0.3 between settings). In the demo: 3.35 (3.8x the real halves), recall 0.31.
        # Its samples: dark-green and tan patches, soft edges, no sharp field blocks yet
        "uncond_diffusion": {"cascade_size": 16, "cascade_every": 7, "cascade_lr": 1e-3,
                             "norm_groups": 4, "standardise": True},
        # the diffusion pair stops at 150 steps: in the demo's 300-step run (curves every 50
        # steps) the grounded U-Net's label fidelity read by the pixel floor was 0.43 / 0.60 /
        # 0.57 / 0.56 / 0.52 at 100-300 steps, its FD 0.115 / 0.064 / 0.062 / 0.092 / 0.088
        # (real halves 0.46); the unconditional U-Net's FD was flat from step 50 on (0.75-0.83,
        # 0.75 at 150); every 50 steps cost ~29 s on one thread
        "generator_steps": 300, "diffusion_steps": 150, "generator_batch": 8,
        # one-cycle at 3e-3 without early stopping, cross-entropy, timm's RegNetX-200MF encoder
        # (its first 3 stages): on the buffered region A (pixel floor: macro IoU 0.628, accuracy
        # 0.940) three seeds reach 0.806 / 0.826 / 0.690 (accuracy 0.943-0.948) after 300 steps,
        # ~45 s a run on 2 threads. ResNet-18 at the same 300 steps: 0.771 (accuracy 0.929) in
        # 75 s; it needs ~600 steps (0.699, accuracy 0.957, 130 s). The earlier setting, ResNet-18
        # with Dice for 150 steps, stayed below the floor: 0.49-0.62.
        "segmenter": {"encoder": "tu-regnetx_002", "encoder_depth": 3, "decoder_width": 8,
                      "lr": 3e-3, "schedule": "onecycle", "patience": 1000, "loss": "ce"},
        # the same step budget for every regime (a mixed regime's epoch is twice as long):
        # 300 steps ~ 26 epochs of region A's 186 real training patches
        "max_epochs": 1000, "max_steps": 300, "batch_size": 16,
        # the tiny CLIP at 64 px, 64 tokens (template captions: 27 tokens median, 66 at most).
        # On the demo's region A (186 training images, 31 test): 100 steps at 1e-3 reach test
        # mR 25.4 +- 0.5 over 3 seeds (chance 16.5; t2i R@10 44.5, chance 32) in ~22 s a run;
        # 150 steps at 5e-4: 27.8 (1 seed, 30 s); 300 steps: 32.6
        "retrieval": {"model": "tiny", "image_size": 64, "context_length": 64, "max_steps": 100,
                      "max_epochs": 1000, "batch_size": 32, "lr": 1e-3, "patience": 1000,
                      "val_every": 3},
        # the tiny ViT + GPT-2 captioner (0.15 s a step of 32 at 64 px); METEOR left out
        # (its Java process takes ~20 s to start, for each of the floors and tests). With the
        # composition loss (weight 1), 600 steps at 3e-3: on region A 4 seeds of 4 learn (test
        # CIDEr-D 0.103-0.180, mean 0.137; consistent 6-23 %, mean 15 %; 11-24 distinct captions
        # for 31 images; ~130 s a run on 1 thread) against the most frequent caption's 0.100 and
        # 0 %. Without the term the same budget collapses on A (0 of 4: CIDEr-D 0.100, 0 %, 3-8
        # distinct), as did 300 steps at 1e-3 (0.078, 0 %, 2-3 distinct); 300 steps with it are
        # too few (0 of 2). Region B learns with or without it (2 seeds: CIDEr-D 0.125 / 0.153,
        # consistent 33 / 32 %, frequent caption 0.080, 0 %)
        "captioning": {"image_size": 64, "max_steps": 600, "max_epochs": 1000, "batch_size": 32,
                       "lr": 3e-3, "patience": 1000, "val_every": 5, "composition_weight": 1.0,
                       "metrics": ("bleu", "rouge_l", "cider")},
        # experiment metric-utility: segmenter steps of each utility run (real, real + a set).
        # On region A, 150 steps: real-only macro IoU 0.756 / 0.757 (2 seeds; floor 0.628), 13
        # sets in 14 min on 2 idle cores (one floor fit); 100 steps: 0.606 / 0.605, below it
        "utility": {"max_steps": 150},
    },
    "full": {
        "spade": {}, "cond": {}, "diffusion": {}, "cond_diffusion": {"mean_prior": True},
        "generator_steps": 100_000, "diffusion_steps": 200_000, "generator_batch": 16,
        "segmenter": {"encoder": "resnet34", "encoder_depth": 5, "decoder_width": None},
        "max_epochs": 20, "max_steps": -1, "batch_size": 24,
        # from random weights unless the experiment gets retrieval_pretrained (e.g. RemoteCLIP)
        "retrieval": {"model": "ViT-B-32", "max_epochs": 10, "batch_size": 128, "lr": 1e-4},
        "captioning": {"max_epochs": 20, "batch_size": 64, "num_beams": 3},
        "utility": {},
    },
}  # fmt: skip


def generator_model(preset: dict[str, Any], kind: str) -> dict[str, Any]:
    """The model options of ``kind``'s generator in ``preset`` (an entry of :data:`PRESETS`):
    SPADE's for ``conditional``, else the shared diffusion options with the map-conditioned
    (``cond_diffusion``) or unconditional (``uncond_diffusion``) additions."""
    if kind == "conditional":
        return {"generator": dict(preset["spade"]), **preset["cond"]}
    model = dict(preset["diffusion"])
    extra = "cond_diffusion" if kind == "conditional-diffusion" else "uncond_diffusion"
    model.update(preset.get(extra, {}))
    return model


def generator_steps(model: dict[str, Any], steps: int) -> int:
    """The training steps of a generator whose patch-size network should take ``steps``: a
    cascade (``cascade_size``) trains that network every ``cascade_every``-th step only."""
    return steps * int(model.get("cascade_every", 1)) if model.get("cascade_size") else steps
