"""Builds the recovery layer's policy objects from the settings.

The retry table, time limits, batch sizing and fallback chain are configured in
:class:`config.settings.Settings`; the recovery layer takes them as plain frozen
values and knows nothing of the environment.
"""

from __future__ import annotations

from config.settings import Settings
from recovery.policy import BatchSizing, ErrorRule, RetryPolicy, TimeLimits


def retry_policy(settings: Settings) -> RetryPolicy:
    """Return the one retry policy that ``settings`` describe."""
    return RetryPolicy(
        rules={
            error_type: ErrorRule(**rule.model_dump())
            for error_type, rule in settings.retry_rules.items()
        },
        time_limits=TimeLimits(
            base_soft_s=settings.soft_time_limit_s,
            factor=settings.time_limit_factor,
            hard_grace_s=settings.hard_time_limit_grace_s,
        ),
        batch_sizing=batch_sizing(settings),
        fallback_chain=settings.fallback_chain,
    )


def batch_sizing(settings: Settings) -> BatchSizing:
    """Return the batch sizing by memory pressure that ``settings`` describe."""
    return BatchSizing(
        thresholds=settings.batch_thresholds, default_size=settings.batch_size_default
    )
