"""Tiny randomly initialised CLIP models built in code (open_clip and transformers)."""

from __future__ import annotations

import json
from pathlib import Path

OPEN_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_open_clip(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """(model config JSON, checkpoint) of a tiny open_clip ViT; the name is the JSON stem."""
    import open_clip
    import torch

    config = folder / "tiny-clip-test.json"
    config.write_text(json.dumps(OPEN_CLIP_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model("tiny-clip-test", pretrained=None)
    ckpt = folder / "tiny-clip-test.pt"
    torch.save(model.state_dict(), ckpt)
    return config, ckpt


def tiny_hf_clip(folder: Path, seed: int = 0) -> Path:
    """A tiny transformers CLIPModel + processor (word-level tokenizer, context 8)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        PreTrainedTokenizerFast,
    )

    words = ["<|startoftext|>", "<|endoftext|>", "<unk>"]
    words += [
        "a",
        "an",
        "the",
        "of",
        "and",
        "with",
        "some",
        "forest",
        "field",
        "fields",
        "river",
        "lake",
        "town",
        "crop",
        "water",
    ]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        model_max_length=8,
    )
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 8,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }
    vision = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 16,
    }
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(
        folder
    )
    CLIPProcessor(image_processor=images, tokenizer=fast).save_pretrained(folder)
    return folder
