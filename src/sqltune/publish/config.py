"""Every setting of the publish step: the one place its name, type, default and help live."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqltune.errors import SqltuneError
from sqltune.settings import FIXED, OPTIONS, setting

if TYPE_CHECKING:
    from sqltune.publish.registry import Registry


@dataclass
class ModelLocation:
    """Where a model's versions live: `s3://bucket/prefix/model_name/` (every `sqltune models` command)."""

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
        if not 0 <= self.promote_margin < float("inf"):
            raise SqltuneError(f"publish parameter promote_margin={self.promote_margin!r} is invalid: expected >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
