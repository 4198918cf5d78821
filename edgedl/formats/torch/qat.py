"""Quantization-aware training with torchao's PT2E flow, as litert-torch's quantizer uses it.

The model is exported (torch.export, batch dimension dynamic), its BatchNorms folded into the
convolutions before them, then prepared with litert-torch's PT2E quantizer in its QAT
configuration: fake quantization of every weight (per channel, symmetric) and activation
(symmetric INT8), whose ranges move with the fine-tuning. After training the learned scales are
exported as they are: torch.onnx writes them as QuantizeLinear/DequantizeLinear pairs, and
litert-torch writes a full-integer .tflite from the same graph.

Two choices here, measured or forced: BatchNorm is folded before training (its statistics are frozen,
as late QAT freezes them anyway) because litert-torch's conv+BN QAT pattern matcher hands
torch.export a function, which torch 2.13 refuses; the quantizer's conv+BN annotators are switched
off to match (there is no BatchNorm left for them). The only module that calls torchao.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgedl.errors import EdgedlError, MissingDependencyError
from edgedl.formats.tflite.convert import quiet


def _libraries():
    try:
        with quiet():  # torchao prints native start-up notices (CUDA kernels it cannot load here)
            from litert_torch.quantize import pt2e_quantizer
            from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
            from torchao.quantization.pt2e.utils import _fuse_conv_bn_
    except ImportError:
        raise MissingDependencyError("litert-torch", "litert-convert", "quantization-aware training") from None
    return pt2e_quantizer, move_exported_model_to_eval, move_exported_model_to_train, convert_pt2e, \
        prepare_qat_pt2e, _fuse_conv_bn_


def _register_conv_clamp() -> None:
    """A conv followed by a clamp (ReLU6, hardtanh) as one quantized unit, observed after the clamp, as
    litert-torch's own "conv_relu" does for ReLU and as LiteRT fuses RELU6 into its convolutions.
    Without it the convolution's output gets a range of its own and the clamp another: a float op
    between two integer kernels in the exported ONNX, and a range half spent on values the clamp
    removes."""
    import torch
    from litert_torch.quantize import pt2e_quantizer_utils as utils

    if "conv_clamp" in utils.OP_TO_ANNOTATOR:
        return
    convs = (torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)
    clamps = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default, torch.ops.aten.clamp.default)

    @utils.register_annotator("conv_clamp")
    def annotate(gm, quantization_config, filter_fn=None):
        done = []
        for clamp in gm.graph.nodes:
            conv = clamp.args[0] if clamp.op == "call_function" and clamp.target in clamps else None
            if not isinstance(conv, torch.fx.Node) or conv.op != "call_function" or conv.target not in convs \
                    or len(conv.users) != 1:
                continue
            qspecs = {conv.args[0]: utils.get_input_act_qspec(quantization_config),
                      conv.args[1]: utils.get_weight_qspec(quantization_config)}
            partition = [clamp, conv, conv.args[1]]
            bias = conv.args[2] if len(conv.args) > 2 else None
            if isinstance(bias, torch.fx.Node):
                qspecs[bias] = utils.get_bias_qspec(quantization_config)
                partition.append(bias)
            if utils._is_annotated(partition) or (filter_fn and any(not filter_fn(n) for n in partition)):
                continue
            conv.meta["quantization_annotation"] = utils.QuantizationAnnotation(input_qspec_map=qspecs, _annotated=True)
            clamp.meta["quantization_annotation"] = utils.QuantizationAnnotation(
                output_qspec=utils.get_output_act_qspec(quantization_config), _annotated=True)
            utils._mark_nodes_as_annotated(partition)
            done.append(partition)
        return done


def quantizer(symmetric_activations: bool = False, weight_bits: int = 8):
    """litert-torch's PT2E quantizer, QAT configuration: per-channel symmetric INT8 weights and INT8
    activations, affine (LiteRT's and, as uint8, ONNX Runtime's form) or symmetric, zero point 0
    (what TensorRT's explicit quantization takes). ``weight_bits`` 7: weights within -63..63 (still
    stored as INT8), for integer kernels that sum pairs of products in 16 bits (x86 without VNNI)."""
    import dataclasses

    import torch

    pt2e_quantizer, *_ = _libraries()
    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    if weight_bits < 8:
        top = 2 ** (weight_bits - 1) - 1
        config = dataclasses.replace(config, weight=dataclasses.replace(config.weight, quant_min=-top, quant_max=top))
    if symmetric_activations:
        spec = dataclasses.replace(config.input_activation, qscheme=torch.per_tensor_symmetric)
        config = dataclasses.replace(config, input_activation=spec, output_activation=spec)
    _register_conv_clamp()
    chosen = pt2e_quantizer.PT2EQuantizer().set_global(config)
    chosen.STATIC_QAT_ONLY_OPS = []  # conv+BN patterns: BatchNorm is folded first (see the module's doc)
    chosen.STATIC_OPS = ["conv_clamp", *chosen.STATIC_OPS]  # before "conv" claims the convolution alone
    return chosen


def _module_class():
    import torch

    class QatModule(torch.nn.Module):
        """A PT2E graph as a module the one training loop can drive: ``train()``/``eval()`` move the
        graph between modes the way torchao asks (its own raise), ``state_dict`` keeps the learned
        scales beside the weights."""

        def __init__(self, graph):
            super().__init__()
            self.graph_module = graph
            self.training = False

        def forward(self, x):
            return self.graph_module(x)

        def train(self, mode: bool = True):
            _, to_eval, to_train, *_ = _libraries()
            (to_train if mode else to_eval)(self.graph_module)
            for module in self.modules():  # the flag converters read (litert-torch warns on a module in training)
                module.training = mode
            return self

    return QatModule


def prepare(module, example: np.ndarray, symmetric_activations: bool = False, sample: np.ndarray | None = None,
            equalize_outliers: bool = True, weight_bits: int = 8):
    """The module with fake quantization inserted, ready to fine-tune (``example``: a batch of 2 or more);
    outlier channels on linear streams equalized first from ``sample`` (a batch of real inputs; its
    record on the module's ``equalized``); weights in ``weight_bits`` (:func:`quantizer`)."""
    from edgedl.formats.torch.equalize import equalize

    import torch

    import copy

    _, _, _, _, prepare_qat_pt2e, fuse_conv_bn = _libraries()
    batch = torch.export.Dim("batch", min=1, max=4096)
    module = copy.deepcopy(module)  # torch.export's graph shares the module's parameters: train a copy
    try:
        with quiet():  # the annotators print notes ("Relu partition has more than one output node")
            graph = torch.export.export(module.eval(), (torch.from_numpy(example),),
                                        dynamic_shapes=({0: batch},)).module()
            fuse_conv_bn(graph)
            graph.recompile()
            equalized = equalize(graph, torch.from_numpy(example if sample is None else sample)) \
                if equalize_outliers else []
            prepared = prepare_qat_pt2e(graph, quantizer(symmetric_activations, weight_bits))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise EdgedlError(f"quantization-aware training cannot prepare this model with torch.export and torchao's "
                          f"PT2E QAT: {first} (rerun with --debug for the full trace)") from None
    qat = _module_class()(prepared)
    qat.equalized = equalized
    return qat


def convert(qat) -> Any:
    """The trained module with its fake quantizers turned into quantize/dequantize ops of the learned
    scales (still a torch module: it runs, and it exports)."""
    _, _, _, convert_pt2e, _, _ = _libraries()
    qat.eval()
    with quiet():
        converted = _module_class()(convert_pt2e(qat.graph_module, fold_quantize=False))
    return converted.eval()


def to_tflite(converted, example: np.ndarray, dst: Path, symmetric_activations: bool = False,
              weight_bits: int = 8) -> None:
    """A full-integer .tflite (int8 inputs and outputs) from the converted graph, by litert-torch (the
    quantizer the graph was prepared with)."""
    import torch

    try:
        import litert_torch
        from litert_torch.quantize.quant_config import QuantConfig
    except ImportError:
        raise MissingDependencyError("litert-torch", "litert-convert", "the QAT .tflite") from None

    try:
        with quiet():
            litert_torch.convert(converted.graph_module, (torch.from_numpy(example[:1]),),
                                 quant_config=QuantConfig(pt2e_quantizer=quantizer(symmetric_activations, weight_bits))).export(str(dst))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise EdgedlError(f"litert-torch cannot convert the QAT model: {first}") from None
