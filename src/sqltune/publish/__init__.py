"""The publish step: adapter versions on S3 with lineage, verified uploads, and channel promotion."""

from sqltune.publish.config import PublishConfig
from sqltune.publish.registry import PromotionResult, Registry, VersionInfo
from sqltune.publish.run import PublishResult, publish

__all__ = ["PromotionResult", "PublishConfig", "PublishResult", "Registry", "VersionInfo", "publish"]
