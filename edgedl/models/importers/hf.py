"""A Hugging Face model folder: ``config.json`` and safetensors weights (and ``tokenizer.json`` for
text, ``preprocessor_config.json`` for images), opened offline through transformers' own classes.

Nothing the folder names runs: a config that asks for remote code (``auto_map``) is refused and
``trust_remote_code`` is never passed; pickled ``pytorch_model.bin`` weights open only when trusted.
The task comes from the config: sequence classification (logits), image classification (logits),
or feature extraction (a pooled embedding per input, as sentence-transformers pools it).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from edgedl._fs import read_text
from edgedl.errors import TrustError, UsageError
from edgedl.models.importers import Importer, first_line

CONFIG_LIMIT = 4 << 20  # bytes: a config, tokenizer config or pooling config larger than this is refused
TOKENIZER_LIMIT = 64 << 20
TASKS = {"ForSequenceClassification": "text-classification", "ForImageClassification": "image-classification"}
DEFAULT_MAX_LENGTH = 128


def _registered(name: str) -> bool:
    from edgedl.models.registry import BUILTIN, _REGISTRY

    return name in BUILTIN or name in _REGISTRY


def check_inside(folder: Path, path: Path) -> Path:
    """``path`` if it (followed through symlinks) stays inside the model folder, or in the Hugging Face
    cache's ``blobs`` beside a ``snapshots/<revision>`` folder; else one UsageError: a model folder
    never makes edgedl read (and copy into a run) a file from elsewhere."""
    root = folder.resolve()
    target = path.resolve()
    allowed = [root]
    if root.parent.name == "snapshots":
        allowed.append(root.parent.parent / "blobs")
    if not any(target.is_relative_to(a) for a in allowed):
        raise UsageError(f"{folder.name}/{path.relative_to(folder) if path.is_relative_to(folder) else path.name} leads "
                         f"to {target}, outside the model folder; edgedl reads a model's files only from inside it")
    return path


def read_json(path: Path, limit: int = CONFIG_LIMIT) -> dict:
    """A JSON file of a model folder, refused in one line when too large or not a JSON object."""
    if path.is_symlink():
        check_inside(path.parent, path)
    try:
        data = json.loads(read_text(path, path.name, limit))
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"{path} is not valid JSON: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


class HFImporter(Importer):
    name = "hf"
    opens = ("reads config.json and safetensors through transformers' own classes, offline; remote code (auto_map) "
             "refused, pickled pytorch_model.bin only when trusted")

    @classmethod
    def matches(cls, spec: str) -> bool:
        """A folder written as a path (``models/bert``, ``./bert``), or any folder holding config.json; a
        bare name that is also a registry model stays the registry's (a run folder called resnet8)."""
        path = Path(spec)
        if not path.is_dir():
            return False
        return "/" in spec or spec.startswith(".") or (path / "config.json").is_file() or not _registered(spec)

    def describe(self, spec: str, trust: bool = False) -> dict:
        """What the folder is, checked without torch: task, modality, weights, tokenizer, pooling.
        Every file it or transformers reads must stay inside the folder; a config whose values have
        the wrong types is one line."""
        folder = Path(spec).resolve()
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json",
                     "modules.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
            if (folder / name).exists() or (folder / name).is_symlink():
                check_inside(folder, folder / name)
        try:
            info = self._describe(folder, trust)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            raise UsageError(f"{folder.name}/config.json (or a file beside it) has a value of the wrong kind: "
                             f"{first_line(exc)}") from None
        if (folder / "model.safetensors.index.json").is_file():
            shards = read_json(folder / "model.safetensors.index.json").get("weight_map") or {}
            for shard in set(shards.values()) if isinstance(shards, dict) else ():
                check_inside(folder, folder / str(shard))
        return info

    def _describe(self, folder: Path, trust: bool) -> dict:
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise UsageError(f"{folder} is a folder without config.json: not a Hugging Face model folder (a model "
                             "folder holds config.json and model.safetensors)")
        config = read_json(config_file)
        if config.get("auto_map"):
            raise UsageError(f"{folder.name}/config.json asks for the folder's own Python code (auto_map: "
                             f"{', '.join(sorted(config['auto_map']))}); edgedl never runs remote code: export the model "
                             "to ONNX with its own code and bring the .onnx")
        model_type = config.get("model_type")
        if not model_type:
            raise UsageError(f"{config_file} names no model_type; transformers cannot tell which architecture it is")
        architectures = config.get("architectures") or []
        arch = str(architectures[0]) if architectures else ""
        task = next((t for suffix, t in TASKS.items() if arch.endswith(suffix)), None)
        if task is None:
            if arch and not arch.endswith("Model"):
                raise UsageError(f"{folder.name} is a {arch}; edgedl imports sequence classification, image "
                                 "classification and feature-extraction (*Model) folders")
            task = "feature-extraction"
        text = "vocab_size" in config and "num_channels" not in config
        weights = [f for f in ("model.safetensors", "model.safetensors.index.json") if (folder / f).is_file()]
        pickled = (folder / "pytorch_model.bin").is_file()
        if not weights and not pickled:
            raise UsageError(f"{folder.name} has no weights: edgedl reads model.safetensors (or a sharded "
                             "model.safetensors.index.json)")
        if not weights and not trust:
            raise TrustError(f"{folder.name} holds its weights only as pytorch_model.bin, a pickle that can run code "
                             "when opened: edgedl opens it only with --trust-model-code; better, convert it to "
                             "model.safetensors")
        info: dict[str, Any] = {"folder": folder, "config": config, "architecture": arch or model_type, "task": task,
                                "modality": "text" if text else "image", "safetensors": bool(weights)}
        id2label = config.get("id2label")
        if task != "feature-extraction" and isinstance(id2label, dict) and id2label:
            # the model's own class order: data labels are matched to it by name, not sorted
            labels = [str(id2label.get(str(i), id2label.get(i, i))) for i in range(len(id2label))]
            if not all(re.fullmatch(r"LABEL_\d+", name) for name in labels):  # transformers' defaults name nothing
                info["labels"] = labels
        if text:
            tokenizer = folder / "tokenizer.json"
            if not tokenizer.is_file():
                raise UsageError(f"{folder.name} is a text model without tokenizer.json (the fast tokenizer's file); "
                                 "save it with tokenizer.save_pretrained(folder)")
            if tokenizer.stat().st_size > TOKENIZER_LIMIT:
                raise UsageError(f"{tokenizer} is over {TOKENIZER_LIMIT >> 20} MiB")
            tok_config = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
            limit = tok_config.get("model_max_length")
            positions = config.get("max_position_embeddings") or DEFAULT_MAX_LENGTH
            max_length = min(int(limit) if isinstance(limit, int) and limit > 0 else positions, positions,
                             DEFAULT_MAX_LENGTH)
            info["tokenizer"] = {"file": str(tokenizer), "max_length": max_length}
            info["pooling"] = _pooling(folder) if task == "feature-extraction" else None
        else:
            processor = folder / "preprocessor_config.json"
            info["processor"] = read_json(processor) if processor.is_file() else None
            info["image_size"] = _image_size(config, info["processor"])
            info["channels"] = int(config.get("num_channels", 3))
        return info

    def check(self, spec: str, *, trust: bool = False, weights: str | None = None) -> None:
        if weights is not None:
            raise UsageError(f"--weights goes with an architecture; {Path(spec).name} holds its own weights")
        self.describe(spec, trust)

    def load(self, spec: str, *, trust: bool = False, weights: str | None = None, kwargs: dict | None = None):
        from edgedl.models.spec import LoadedModel

        info = self.describe(spec, trust)
        model = _from_pretrained(info)
        text_model, image_model = wrappers()
        if info["modality"] == "text":
            module = text_model(model, info["task"], info.get("pooling"))
        else:
            module = image_model(model, info["task"])
        loaded = LoadedModel(module.eval(), {"spec": str(Path(spec).resolve()), "kwargs": {}}, kind="python")
        loaded.inputs = model_inputs(info)
        loaded.hf = {k: v for k, v in info.items() if k in ("architecture", "task", "modality", "tokenizer",
                                                           "pooling", "image_size", "labels")}
        if info["modality"] == "image":
            loaded.hf["normalization"] = image_normalization(info.get("processor"), info["image_size"])
        return loaded

    def stem(self, spec: str) -> str:
        return Path(spec.rstrip("/")).name or "model"


def _pooling(folder: Path) -> dict:
    """How sentence-transformers pools token embeddings for this folder (mean by default)."""
    pooling = {"mode": "mean", "normalize": False}
    modules_file = folder / "modules.json"
    modules = []
    if modules_file.is_file():
        try:
            raw = json.loads(read_text(modules_file, "modules.json", CONFIG_LIMIT))
        except (ValueError, RecursionError) as exc:
            raise UsageError(f"{modules_file} is not valid JSON: {first_line(exc)}") from None
        modules = raw if isinstance(raw, list) else []
    for module in modules:
        kind = str(module.get("type", "")) if isinstance(module, dict) else ""
        if not isinstance(module, dict):
            continue
        if kind.endswith("Normalize"):
            pooling["normalize"] = True
        if kind.endswith("Pooling"):
            path = folder / str(module.get("path", "")) / "config.json"
            if path.is_file() and path.resolve().is_relative_to(folder.resolve()):
                config = read_json(path)
                if config.get("pooling_mode_cls_token"):
                    pooling["mode"] = "cls"
                elif config.get("pooling_mode_max_tokens"):
                    pooling["mode"] = "max"
    return pooling


def _image_size(config: dict, processor: dict | None) -> list[int]:
    size = config.get("image_size")
    if isinstance(size, int):
        return [size, size]
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return [int(s) for s in size]
    size = (processor or {}).get("size") or {}
    if isinstance(size, dict) and "height" in size:
        return [int(size["height"]), int(size["width"])]
    if isinstance(size, dict) and "shortest_edge" in size:
        return [int(size["shortest_edge"])] * 2
    return [224, 224]


def image_normalization(processor: dict | None, size: list[int]) -> dict | None:
    """The processor's preprocessing in the sidecar's terms (model_input = (resize(raw) * scale - mean) / std)."""
    if not processor:
        return None
    return {"scale": float(processor.get("rescale_factor", 1 / 255)) if processor.get("do_rescale", True) else 1.0,
            "mean": list(processor.get("image_mean", [0.0, 0.0, 0.0])) if processor.get("do_normalize", True) else [0.0] * 3,
            "std": list(processor.get("image_std", [1.0, 1.0, 1.0])) if processor.get("do_normalize", True) else [1.0] * 3,
            "resize": "bilinear", "raw": f"HxWxC uint8, resized to {size[0]}x{size[1]}", "raw_range": [0, 255]}


def model_inputs(info: dict) -> list:
    from edgedl.runtime.base import TensorInfo

    if info["modality"] == "text":
        length = info["tokenizer"]["max_length"]
        return [TensorInfo("input_ids", (None, length), "int64"), TensorInfo("attention_mask", (None, length), "int64")]
    return [TensorInfo("pixel_values", (None, info["channels"], *info["image_size"]), "float32", "NCHW")]


def quiet_transformers() -> None:
    """transformers' progress bars and notes are not the user's model's: keep the screen edgedl's."""
    import logging

    # transformers imports torchao, whose import logs notes about CUDA kernels this CPU build lacks and
    # torch's pytree deprecations: not the user's model's business.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    logging.getLogger("torchao").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" bars on every reload of a run's checkpoint


def _from_pretrained(info: dict):
    import transformers

    quiet_transformers()

    auto = {"text-classification": "AutoModelForSequenceClassification",
            "image-classification": "AutoModelForImageClassification"}.get(info["task"], "AutoModel")
    previous = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    try:
        model = getattr(transformers, auto).from_pretrained(
            str(info["folder"]), local_files_only=True, trust_remote_code=False, use_safetensors=info["safetensors"])
    except Exception as exc:
        raise UsageError(f"transformers cannot load {info['folder']}: {first_line(exc)}") from None
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return model


_WRAPPERS: tuple = ()


def wrappers() -> tuple:
    """(TextModel, ImageModel): torch modules, so defined when first asked for (this module stays
    importable without torch)."""
    global _WRAPPERS
    if not _WRAPPERS:
        _WRAPPERS = _define_wrappers()
    return _WRAPPERS


def _define_wrappers():
    import torch

    class TextModel(torch.nn.Module):
        """A transformers text model as ``(input_ids, attention_mask) -> logits or pooled embedding``."""

        def __init__(self, model, task: str, pooling: dict | None):
            super().__init__()
            self.model, self.task = model, task
            self.pooling = dict(pooling or {"mode": "mean", "normalize": False})

        def forward(self, input_ids, attention_mask):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            if self.task != "feature-extraction":
                return out.logits
            hidden = out.last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if self.pooling["mode"] == "cls":
                pooled = hidden[:, 0]
            elif self.pooling["mode"] == "max":
                pooled = (hidden - (1 - mask) * 1e9).amax(1)
            else:
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.pooling.get("normalize"):
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            return pooled

    class ImageModel(torch.nn.Module):
        """A transformers image model as ``pixel_values -> logits or pooled embedding``."""

        def __init__(self, model, task: str):
            super().__init__()
            self.model, self.task = model, task

        def forward(self, pixel_values):
            out = self.model(pixel_values=pixel_values)
            if self.task != "feature-extraction":
                return out.logits
            pooled = getattr(out, "pooler_output", None)
            return pooled if pooled is not None else out.last_hidden_state[:, 0]

    return TextModel, ImageModel
