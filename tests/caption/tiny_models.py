"""Tiny randomly initialised transformers models built in code and saved to a folder.

No download: the tokenizer is a word-level ``tokenizers`` model over a small vocabulary with
a chat template; the text model is a 2-layer Llama, the image-text model a LLaVA made of a
1-layer CLIP vision tower and that Llama. Random weights write gibberish; tests check
mechanics only.
"""

from __future__ import annotations

from pathlib import Path

_SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "<image>"]
_WORDS = [
    "a",
    "land",
    "cover",
    "map",
    "of",
    "satellite",
    "image",
    "tile",
    "gives",
    "these",
    "shares",
    ":",
    "-",
    "tree",
    "shrub",
    "grass",
    "crop",
    "built-up",
    "barren",
    "water",
    "%",
    "write",
    "one",
    "or",
    "two",
    "sentences",
    "the",
    "and",
    "with",
    "some",
    "mostly",
    "fields",
    "forest",
    "river",
    "lake",
    "town",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> "
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<image> {% else %}{{ p['text'] }}{% endif %}"
    "{% endfor %}{% endif %} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def _tokenizer(image_token: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = _SPECIAL + [f"w{i}" for i in range(40)] + _WORDS
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    extra = {"extra_special_tokens": {"image_token": "<image>"}} if image_token else {}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        **extra,
    )
    return fast, vocab


def _llama_config(vocab: dict[str, int]):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        initializer_range=0.5,  # spread logits: greedy choices far from ties
    )


def tiny_causal_lm(folder: Path, seed: int = 0) -> Path:
    """A text-only chat model (AutoModelForCausalLM + AutoTokenizer) saved in ``folder``."""
    import torch
    from transformers import LlamaForCausalLM

    tok, vocab = _tokenizer(image_token=False)
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    LlamaForCausalLM(_llama_config(vocab)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tiny_llava(folder: Path, seed: int = 0) -> Path:
    """An image-text chat model (AutoModelForImageTextToText + AutoProcessor) in ``folder``."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok, vocab = _tokenizer(image_token=True)
    images = CLIPImageProcessor(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, do_center_crop=True
    )
    LlavaProcessor(
        image_processor=images,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    ).save_pretrained(folder)
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
        projection_dim=16,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_llama_config(vocab),
        image_token_index=vocab["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=4,
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    return folder
