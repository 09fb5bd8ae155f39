"""Quadratic warm-up of the sparsity weights λ_q, λ_d: ``λ(step) = λ · min(1, step / T)²``.

The two conventions in use differ, so both are explicit here:

- sentence-transformers' ``SpladeRegularizerWeightSchedulerCallback`` (added by
  ``SparseEncoderTrainer`` whenever the loss is a SpladeLoss): T = ``int(total_steps ×
  warmup_ratio)`` (ratio 1/3 by default), evaluated at ``global_step`` (0 at the first update),
  so the first update has λ = 0.
- the reference code: an absolute T (200 of 2000 steps) and ``((step + 1) / T)²``, so the first
  update already has λ/T².

:class:`QuadraticWarmup` takes T either as ``warmup_steps`` (absolute) or ``warmup_ratio`` (of the
total steps), never both, and ``count_from_one`` picks the step convention.
:func:`warmup_callback` builds a trainer callback that applies it to a SpladeLoss; the callback
subclasses sentence-transformers' own, so the trainer keeps it instead of adding its default.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["QuadraticWarmup", "warmup_callback"]


@dataclass(frozen=True)
class QuadraticWarmup:
    """``weight(step) = max_weight · min(1, s / T)²`` with ``s = step (+1 if count_from_one)``.

    Exactly one of ``warmup_steps`` (absolute T) and ``warmup_ratio`` (T = ``int(total ×
    ratio)``, at least 1) is given; ``warmup_steps=0`` means no warm-up.
    """

    warmup_steps: int | None = None
    warmup_ratio: float | None = None
    count_from_one: bool = False

    def __post_init__(self) -> None:
        if (self.warmup_steps is None) == (self.warmup_ratio is None):
            raise ValueError("give exactly one of warmup_steps (absolute) and warmup_ratio")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.warmup_ratio is not None and not 0 < self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be in (0, 1], got {self.warmup_ratio}")

    def steps(self, total_steps: int | None = None) -> int:
        """T in optimizer steps (a ratio needs ``total_steps``)."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        if total_steps is None or total_steps < 1:
            raise ValueError("a warmup_ratio needs the total number of steps")
        assert self.warmup_ratio is not None
        return max(1, int(total_steps * self.warmup_ratio))

    def factor(self, step: int, total_steps: int | None = None) -> float:
        """``min(1, s / T)²`` at optimizer step ``step`` (0-based, the trainer's global_step)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        t = self.steps(total_steps)
        if t == 0:
            return 1.0
        s = step + 1 if self.count_from_one else step
        return min(1.0, s / t) ** 2

    def weight(self, max_weight: float, step: int, total_steps: int | None = None) -> float:
        """λ at ``step`` for a maximum λ of ``max_weight``."""
        return max_weight * self.factor(step, total_steps)


def _base_callback() -> type:
    from sentence_transformers.sparse_encoder.callbacks.splade_callbacks import (
        SpladeRegularizerWeightSchedulerCallback,
    )

    return SpladeRegularizerWeightSchedulerCallback


def warmup_callback(loss: object, schedule: QuadraticWarmup) -> object:
    """A trainer callback that sets ``loss.document_regularizer_weight`` and
    ``loss.query_regularizer_weight`` (the values the loss was built with are the maxima) from
    ``schedule`` at the start of every optimizer step. Pass it in the trainer's ``callbacks``:
    being a ``SpladeRegularizerWeightSchedulerCallback``, it replaces the trainer's default.
    """
    base = _base_callback()

    class _Callback(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(loss=loss)
            self.schedule = schedule

        def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            super().on_train_begin(args, state, control, **kwargs)
            self.warmup_steps = self.schedule.steps(self.total_steps)
            self._apply(state.global_step)  # not 0 when resuming from a checkpoint

        def _calculate_weight_value(self, step: int, max_value: float | None) -> float | None:
            if max_value is None:
                return None
            return self.schedule.weight(max_value, step, self.total_steps)

        def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            self._apply(state.global_step)

        def _apply(self, step: int) -> None:
            doc = self._calculate_weight_value(step, self.max_document_regularizer_weight)
            query = self._calculate_weight_value(step, self.max_query_regularizer_weight)
            self.loss.document_regularizer_weight = doc
            self.loss.query_regularizer_weight = query
            self._current_document_regularizer_weight = doc
            self._current_query_regularizer_weight = query

    _Callback.__name__ = _Callback.__qualname__ = "QuadraticWarmupCallback"
    return _Callback()
