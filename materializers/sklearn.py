"""scikit-learn estimators and pipelines through skops, never plain pickle.

The estimator is written with ``skops.io.dumps`` to ``model.skops``. skops'
loader rebuilds only types it knows to be safe (scikit-learn's estimators,
numpy, scipy, builtins); any other type the file names (your own estimator
class, a function, ``sklearn.tree._tree.Tree`` inside tree ensembles) runs
code when rebuilt, so it gets the same trust rule as a pickle:

* on save, when the file names such types, they are listed in ``state``
  (``untrusted_types``) and the file is signed with the store's secret
  (``state["signature"]``, over the exact bytes);
* on load, the types are computed again from the bytes (never taken from
  ``state``); the file loads when it names none, when the signature holds
  under this store's secret, or when every such type is on the registry's
  allow-list (``materializers.registry.allow("pkg.module:Class")``). Else an
  :class:`UntrustedArtifactError` lists the types and the fixes.

An imported artifact (signed by another store) therefore loads only when it
names nothing skops distrusts, unless imported with ``trust_pickles=True``
(which signs it again here) or its types are allowed.

This module imports scikit-learn and skops; the registry imports it only when
a ``BaseEstimator`` subclass is looked up.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import numpy as np

from engine.errors import MaterializerError, UntrustedArtifactError

try:
    import sklearn
    import skops
    import skops.io as sio
    from sklearn.base import BaseEstimator
except ImportError as exc:  # a store holding skops models opened without them
    raise MaterializerError(
        f"Loading or saving scikit-learn models needs scikit-learn and skops ({exc}): "
        "pip install 'artledger[sklearn]'."
    ) from exc

from materializers import registry
from materializers.base import BaseMaterializer

MODEL_FILE: Final = "model.skops"
MAX_REPR: Final = 200


def _skops_name(topic: str) -> str:
    """skops' dotted name (``pkg.mod.Class``) for a registry identity (``pkg.mod:Class``)."""
    module, _, qualname = topic.partition(":")
    return f"{module}.{qualname}"


class SklearnMaterializer(BaseMaterializer):
    """scikit-learn estimators (pipelines included) as a skops file."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (BaseEstimator,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "model"
    VERSION: ClassVar[int] = 1

    def save(self, data: Any) -> None:
        try:
            payload: bytes = sio.dumps(data)
        except Exception as exc:
            raise MaterializerError(
                f"skops cannot save a `{type(data).__qualname__}`: {exc}. Register a "
                "materializer for it with `@register`, or pass `output_materializers=`."
            ) from exc
        with self.open(MODEL_FILE, "wb") as f:
            f.write(payload)
        state = self.files.state
        state["sklearn"] = sklearn.__version__
        state["skops"] = skops.__version__
        unknown = sorted(sio.get_untrusted_types(data=payload))
        if unknown:
            state["untrusted_types"] = unknown
            state["signed_file"] = MODEL_FILE  # for resign_pickles on a trusted import
            state["signature"] = self.files.sign(payload)

    def load(self, data_type: type) -> Any:
        with self.open(MODEL_FILE, "rb") as f:
            payload = f.read()
        unknown = sorted(sio.get_untrusted_types(data=payload))
        allowed = {_skops_name(topic) for topic in registry.allowed()}
        refused = [name for name in unknown if name not in allowed]
        signature = self.files.state.get("signature")
        signed = isinstance(signature, str) and self.files.verify(payload, signature)
        if refused and not signed:
            listed = ", ".join(f"`{name}`" for name in refused)
            allow = ", ".join(
                f"'{name.rpartition('.')[0]}:{name.rpartition('.')[2]}'" for name in refused
            )
            raise UntrustedArtifactError(
                f"Refusing to load {MODEL_FILE}: it names types skops does not trust, whose "
                f"loading runs code: {listed}; its signature "
                + ("does not hold under this store's secret" if signature else "is missing")
                + ". If you trust where it came from, save it again in this store, import it "
                "with Store.import_(..., trust_pickles=True), or allow the types: "
                f"materializers.registry.allow({allow})."
            )
        try:
            return sio.loads(payload, trusted=unknown)
        except Exception as exc:
            raise MaterializerError(
                f"skops cannot load {MODEL_FILE} (written by scikit-learn "
                f"{self.files.state.get('sklearn')}, skops {self.files.state.get('skops')}; "
                f"running {sklearn.__version__}, {skops.__version__}): {exc}"
            ) from exc

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {"class": registry.identity(type(data))}
        try:
            params = data.get_params(deep=False)
        except Exception:
            params = {}
        meta["params"] = {str(k): _plain(v) for k, v in params.items()}
        steps = getattr(data, "steps", None)
        if isinstance(steps, list):
            meta["steps"] = [[str(name), _plain(step)] for name, step in steps]
        meta["fitted"] = _fitted_attributes(data)
        return meta

    def save_visualizations(self, data: Any) -> dict[str, str]:
        from sklearn.utils import estimator_html_repr

        with self.open("model.html", "w") as f:
            f.write(estimator_html_repr(data))
        meta = self.metadata if self.metadata is not None else self.extract_metadata(data)
        lines = [f"# `{meta['class']}`", "", "| parameter | value |", "| --- | --- |"]
        lines += [f"| {k} | `{v}` |" for k, v in meta["params"].items()]
        if meta["fitted"]:
            lines += ["", "| fitted attribute | shape or value |", "| --- | --- |"]
            lines += [f"| {k} | `{v}` |" for k, v in meta["fitted"].items()]
        with self.open("summary.md", "w") as f:
            f.write("\n".join(lines) + "\n")
        return {"model.html": "html", "summary.md": "markdown"}


def _plain(value: Any) -> Any:
    """``value`` if msgpack stores it as is, an estimator's class identity, else a short repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(
        v is None or isinstance(v, (bool, int, float, str)) for v in value
    ):
        return list(value)
    if isinstance(value, BaseEstimator):
        return registry.identity(type(value))
    text = repr(value)
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."


def _fitted_attributes(data: Any) -> dict[str, Any]:
    """Fitted attributes (``coef_``, ``classes_``, ...): arrays by shape, scalars by value."""
    out: dict[str, Any] = {}
    for key, value in sorted(vars(data).items()):
        if not key.endswith("_") or key.startswith("_"):
            continue
        if isinstance(value, np.ndarray):
            out[key] = list(value.shape)
        elif isinstance(value, (bool, int, float, str, np.generic)):
            out[key] = value.item() if isinstance(value, np.generic) else value
        elif isinstance(value, (list, tuple)):
            out[key] = f"{type(value).__name__} of {len(value)}"
        else:
            out[key] = type(value).__qualname__
    return out
