"""Which HyperModel a study tries: the built-in CNN space, or the user's own code named by the
study file's `[space] hypermodel = "module.path:Name"` (or `"file.py:Name"`, relative to the
study file): a `keras_tuner.HyperModel` subclass or instance, or a plain `build(hp)` function.

The user's network is trained by the study's tuned recipe (`tuning.study.recipe_hypermodel`)
unless their HyperModel defines its own `fit`. The study file names code that is imported and
run here, in the study's process; nothing else (the dashboard included) imports it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

from tuning.errors import ConfigError
from tuning.study.config import StudySpec
from tuning.study.recipe_hypermodel import RecipeHyperModel
from tuning.study.space import CNNHyperModel


def make_hypermodel(
    spec: StudySpec,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    precision: str = "float32",
    max_epochs: int | None = None,
) -> RecipeHyperModel:
    """The study's HyperModel for images of `input_shape` in `num_classes` classes, its recipes
    capped at `max_epochs` (default: the study file's; export passes the stored study's).

    Raises:
        ConfigError: the HyperModel cannot be imported, is neither a HyperModel nor a callable,
            or cannot be made.
    """
    max_epochs = max_epochs or spec.fidelity.max_epochs
    ref = spec.space.hypermodel
    if ref is None:
        return CNNHyperModel(
            max_epochs=max_epochs,
            num_classes=num_classes,
            input_shape=input_shape,
            precision=precision,
        )
    where = f"{spec.path}: space.hypermodel '{ref}'"
    target = _load(ref, spec.path.parent, where)
    sizes = {"input_shape": input_shape, "num_classes": num_classes}
    if isinstance(target, type) and issubclass(target, kt.HyperModel):
        try:
            target = target(**_accepted(target, sizes))
        except Exception as exc:
            raise ConfigError(f"{where}: {target.__name__}(...) raised {_one_line(exc)}") from None
    elif not isinstance(target, kt.HyperModel) and not callable(target):
        raise ConfigError(
            f"{where}: expected a keras_tuner.HyperModel or a build(hp) function. "
            f"Received: {type(target).__name__}"
        )
    return UserHyperModel(
        target,
        where=where,
        max_epochs=max_epochs,
        num_classes=num_classes,
        input_shape=input_shape,
        precision=precision,
    )


class UserHyperModel(RecipeHyperModel):
    """The user's network (`target.build(hp)` or `target(hp)`), checked against the data, with
    the study's training recipe, or with the target's own `fit` if it defines one."""

    def __init__(
        self,
        target: Any,
        *,
        where: str,
        max_epochs: int,
        num_classes: int,
        input_shape: tuple[int, int, int],
        precision: str = "float32",
    ) -> None:
        super().__init__(
            max_epochs=max_epochs,
            num_classes=num_classes,
            input_shape=input_shape,
            precision=precision,
        )
        self.target = target
        self.where = where
        self.own_fit = isinstance(target, kt.HyperModel) and type(target).fit is not (
            kt.HyperModel.fit
        )

    def _make_model(self, hp: Any) -> keras.Model:
        try:
            if isinstance(self.target, kt.HyperModel):
                model = self.target.build(hp)
            else:
                model = self.target(hp, **_accepted(self.target, self._sizes()))
        except Exception as exc:
            raise ConfigError(f"{self.where}: build(hp) raised {_one_line(exc)}") from None
        self._check(model)
        return model

    def _sizes(self) -> dict[str, Any]:
        return {"input_shape": self.input_shape, "num_classes": self.num_classes}

    def _check(self, model: Any) -> None:
        if not isinstance(model, keras.Model):
            raise ConfigError(
                f"{self.where}: build(hp) must return a compiled keras.Model. "
                f"Received: {type(model).__name__}"
            )
        if not getattr(model, "compiled", False):
            raise ConfigError(
                f"{self.where}: build(hp) must return a compiled model (call model.compile "
                "with a loss and metrics=['accuracy'])"
            )
        inputs, outputs = tuple(model.input_shape), tuple(model.output_shape)
        if inputs[1:] != self.input_shape:
            raise ConfigError(
                f"{self.where}: the model takes inputs of shape {inputs[1:]}, but the data's "
                f"images are {self.input_shape}. Received: input_shape={inputs}"
            )
        if outputs[1:] != (self.num_classes,):
            raise ConfigError(
                f"{self.where}: the model must output one score per class "
                f"({self.num_classes} classes). Received: output_shape={outputs}"
            )
        last = model.layers[-1]
        softmax = isinstance(last, keras.layers.Softmax) or (
            getattr(getattr(last, "activation", None), "__name__", "") == "softmax"
        )
        if not self.own_fit and not softmax:
            raise ConfigError(
                f"{self.where}: the training recipe needs softmax outputs; end the model in "
                "a softmax layer or give the HyperModel its own fit(hp, model, x, y, ...)"
            )

    def fit(self, hp: Any, model: keras.Model, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> Any:
        """The recipe's training (`RecipeHyperModel.fit`), or the target's own `fit`, which gets
        integer labels, `validation_data` and `callbacks` and chooses its epochs itself."""
        if not self.own_fit:
            return super().fit(hp, model, x, y, **kwargs)
        validation = kwargs.get("validation_data")
        history = self.target.fit(
            hp, model, x, y, validation_data=validation, callbacks=kwargs.get("callbacks")
        )
        if not isinstance(history, keras.callbacks.History):
            history = model.history
        if validation is not None and "val_accuracy" not in history.history:
            # Scored like every trial: accuracy on the held-out fold.
            probs = model.predict(validation[0], batch_size=512, verbose=0)
            history.history["val_accuracy"] = [float(np.mean(probs.argmax(1) == validation[1]))]
        return history


def _load(ref: str, folder: Path, where: str) -> Any:
    module_name, _, name = ref.rpartition(":")
    try:
        if module_name.endswith(".py"):
            module = _import_file(folder / module_name, where)
        else:
            sys.path.insert(0, str(folder))
            try:
                module = importlib.import_module(module_name)
            finally:
                sys.path.remove(str(folder))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{where}: cannot import '{module_name}': {_one_line(exc)}") from None
    if not hasattr(module, name):
        raise ConfigError(f"{where}: module '{module_name}' has no '{name}'")
    return getattr(module, name)


def _import_file(path: Path, where: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"{where}: no such file {path}")
    resolved = path.resolve()
    # One module per file, named after its path: two study folders' `models.py` never clash.
    key = f"_tuning_user_{resolved.stem}_{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, resolved)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{where}: {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module


def _accepted(function: Any, candidates: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `candidates` that `function` accepts."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(candidates)
    names = {p.name for p in parameters}
    return {k: v for k, v in candidates.items() if k in names}


def _one_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
