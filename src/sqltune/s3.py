"""S3 primitives every part shares: conditional writes (a write that only happens if the object is absent, or still
the version that was read) and one translation of S3 failures into clear errors that never include credentials.

The model registry moves its channel pointers with them, and a training run holds its checkpoint directory's lease.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqltune.errors import SqltuneError

_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden", "InvalidToken"}
PRECONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def describe(exc: BaseException, bucket: str, endpoint_url: str | None) -> str:
    """A one-line reason for an S3 failure; never includes credentials."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    where = f"bucket {bucket!r} at {endpoint_url or 'the AWS endpoint'}"
    code = error_code(exc)
    if isinstance(exc, NoCredentialsError):
        return "no S3 credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an IAM role)"
    if code in _AUTH_CODES:
        return f"access denied to {where} ({code}): check the S3 credentials and their permissions"
    if code in {"NoSuchBucket", "404"}:
        return f"{where} does not exist"
    if isinstance(exc, EndpointConnectionError) or "Could not connect" in str(exc):
        return f"cannot reach the S3 endpoint {endpoint_url or '(AWS default)'}"
    return f"S3 request on {where} failed: {code or type(exc).__name__}: {_message(exc)}"


def _message(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message") or exc)


@contextmanager
def s3_errors(bucket: str, endpoint_url: str | None, doing: str) -> Iterator[None]:
    """Turn boto3 failures inside the block into one clear SqltuneError."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise SqltuneError(f"{doing} failed: {describe(exc, bucket, endpoint_url)}") from None


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def put_json(client: Any, bucket: str, key: str, obj: Any, *, if_match: str | None = None) -> str | None:
    """Write JSON only if the object is absent (`if_match=None`) or still has ETag `if_match`.

    Returns the ETag of what was written (for the next `if_match`), or None when the condition failed: someone
    else wrote it first.
    """
    return put_bytes(client, bucket, key, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), if_match)


def put_bytes(client: Any, bucket: str, key: str, body: bytes, if_match: str | None = None) -> str | None:
    """A conditional write (see `put_json`) the server checks against our SHA256."""
    from botocore.exceptions import ClientError

    condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
    try:
        reply = client.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            ChecksumSHA256=b64(hashlib.sha256(body).digest()),
            **condition,
        )
    except ClientError as exc:
        if error_code(exc) in PRECONDITION_FAILED:
            return None
        raise
    return reply["ETag"]
