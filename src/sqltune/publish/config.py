"""Every setting of the publish step: the one place its name, type, default and help live."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqltune.settings import FIXED, OPTIONS, SettingError, build_config, check_settings, setting

if TYPE_CHECKING:
    from sqltune.publish.registry import Registry


@dataclass
class ModelLocation:
    """Where a model's versions live: `s3://bucket/prefix/model_name/` (every `sqltune registry` command)."""

    bucket: str = setting(..., "S3 bucket.")
    model_name: str = setting(..., "Model name (a key segment).")
    prefix: str = setting("", "Key prefix inside the bucket.")

    def registry(self, endpoint_url: str | None) -> Registry:
        from sqltune.publish.registry import Registry

        return Registry(self.bucket, self.prefix, self.model_name, endpoint_url)


@dataclass
class PublishConfig(ModelLocation):
    """Where to publish (the location's settings) and how to promote."""

    version: str | None = setting(
        None, "Version name (default: run-<run id>, else sha-<content>); the pipeline names it after the run.",
        pipeline=FIXED,
    )  # fmt: skip
    promote_channel: str | None = setting(
        None, "Channel to promote the version to if it beats the current one.", aliases=("--promote",)
    )
    promote_margin: float = setting(0.0, "EX (all) improvement needed to promote.", aliases=("--margin",))
    force: bool = setting(False, "Promote even if it does not beat the current version.", pipeline=OPTIONS)

    def __post_init__(self) -> None:
        check_settings(self, "publish")
        if not 0 <= self.promote_margin < float("inf"):
            raise SettingError("publish", "promote_margin", self.promote_margin, ">= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def component_config(params: Mapping[str, Any]) -> PublishConfig:
    """The publish component's config from its parameters (`promote_channel` '' means do not promote); the component
    and the pipeline's submission check both build it here."""
    settings = {name: params[name] for name in ("bucket", "model_name", "prefix", "promote_margin")}
    settings["promote_channel"] = params["promote_channel"] or None
    return build_config(PublishConfig, settings, params["publish_options"], "publish_options")
