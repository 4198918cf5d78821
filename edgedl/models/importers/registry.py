"""A name from edgedl's model registry (``resnet8``, ``mobilenetv2_050``): edgedl's own code."""

from __future__ import annotations

from edgedl.errors import UsageError
from edgedl.models.importers import Importer


class RegistryImporter(Importer):
    name = "registry"
    opens = "builds one of edgedl's own architectures (random weights until trained or given --weights)"

    @classmethod
    def matches(cls, spec: str) -> bool:
        return True  # the last in the order: anything else is a name

    def check(self, spec: str, *, trust: bool = False, weights: str | None = None) -> None:
        from edgedl.models.registry import check_name

        if "/" in spec or spec.startswith("."):  # a path that is not there, not a misspelt name
            raise UsageError(f"model file or folder not found: {spec}")
        check_name(spec)
        if weights is not None:
            from edgedl.models.importers.factory import check_weights

            check_weights(weights, trust)

    def load(self, spec: str, *, trust: bool = False, weights: str | None = None, kwargs: dict | None = None):
        from edgedl.models.registry import create_model, get_entry
        from edgedl.models.spec import LoadedModel

        kwargs = dict(kwargs or {})
        if weights is not None:
            from edgedl.models.importers.factory import with_weights

            loaded = with_weights(lambda kw: create_model(spec, **kw), spec, weights, kwargs, trust)
        else:
            loaded = LoadedModel(create_model(spec, **kwargs), {"spec": spec, "kwargs": kwargs})
        if get_entry(spec).task != "classification":
            loaded.hf = {"task": get_entry(spec).task}  # what the model does, for the stages and sidecars
        return loaded

    def stem(self, spec: str) -> str:
        return spec
