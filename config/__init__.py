"""Typed settings for chunkq, read once from ``CHUNKQ_*`` environment variables."""

from config.settings import DEFAULT_REDIS_URL, Settings, get_settings

__all__ = ["DEFAULT_REDIS_URL", "Settings", "get_settings"]
