"""The publish step: adapter versions on S3 with lineage, verified uploads, and channel promotion."""

from sqltune.publish.core import PublishResult, publish
from sqltune.publish.registry import PromotionResult, Registry, VersionInfo

__all__ = ["PromotionResult", "PublishResult", "Registry", "VersionInfo", "publish"]
