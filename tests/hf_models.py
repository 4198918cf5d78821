"""Hugging Face model folders the tests build from a transformers config (no download): a small
BERT sentence encoder with a WordPiece tokenizer trained here, a BERT sequence classifier, and a
small ViT image classifier. Weights are random unless a test trains them; what the tests check
is the path (import, export, quantize, evaluate, bench) and the numbers that path must keep.

The text is real English: sentences from the docstrings of Python's standard library.
"""

from __future__ import annotations

import json
import re
from pathlib import Path


def sentences(count: int = 200) -> list[str]:
    """Real sentences (5 to 30 words) from standard-library docstrings, in a fixed order."""
    import argparse
    import collections
    import json as json_module
    import logging
    import os
    import pathlib
    import subprocess
    import textwrap
    import unittest

    found: list[str] = []
    for module in (os, json_module, collections, argparse, logging, pathlib, subprocess, textwrap, unittest):
        docs = [module.__doc__ or ""] + [getattr(getattr(module, n), "__doc__", "") or "" for n in sorted(dir(module))
                                          if not n.startswith("_")]
        for doc in docs:
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                words = sentence.split()
                if 5 <= len(words) <= 30 and sentence[0].isupper() and sentence not in found:
                    found.append(sentence)
    return found[:count]


def tokenizer_json(folder: Path, text: list[str], vocab_size: int = 400) -> None:
    """A BERT-style WordPiece tokenizer trained on ``text``, saved as tokenizer.json (what a
    transformers fast tokenizer saves), with [CLS] ... [SEP] added around each sentence."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(text, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32}))


def bert_folder(folder: Path, task: str = "feature-extraction", num_labels: int = 2, seed: int = 0,
                sentence_transformers: bool = True) -> Path:
    """A 2-layer BERT (hidden 64, 4 heads) saved as config.json + model.safetensors + tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_json(folder, sentences())
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64, num_labels=num_labels)
    torch.manual_seed(seed)
    model = (BertForSequenceClassification if task == "text-classification" else BertModel)(config).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    if sentence_transformers and task == "feature-extraction":
        (folder / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return folder


def vit_folder(folder: Path, num_labels: int = 10, image_size: int = 32, channels: int = 3, seed: int = 0) -> Path:
    """A 2-layer ViT image classifier (patch 8, hidden 64) with its image processor's config."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    folder.mkdir(parents=True, exist_ok=True)
    config = ViTConfig(image_size=image_size, patch_size=8, num_channels=channels, hidden_size=64,
                       num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_labels=num_labels)
    torch.manual_seed(seed)
    ViTForImageClassification(config).eval().save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * channels,
        "image_std": [0.5] * channels, "size": {"height": image_size, "width": image_size}}))
    return folder


def sentence_file(path: Path, count: int = 120) -> Path:
    path.write_text("\n".join(sentences(count)) + "\n")
    return path
