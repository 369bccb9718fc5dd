"""The S3 client every S3 reader and writer of the provider uses: the Amazon provider's ``S3Hook``'s own.

Public because three folders read or write S3 with it: the transfer and the publish step
(``transfers/``) and the Segmind page (``plugins/``). ``ChecksumMode`` is the operators'
``checksum_mode`` argument: ``"when_required"`` for stores that reject the newer checksum headers.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["ChecksumMode", "s3_client"]

ChecksumMode = Literal["when_supported", "when_required"]


def s3_client(aws_conn_id: str, checksum_mode: ChecksumMode) -> Any:
    """A boto3 S3 client from the AWS connection (the Amazon provider's ``S3Hook``), with the checksum mode applied."""
    try:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    except ImportError as err:
        from airflow.providers.common.compat.sdk import AirflowException

        raise AirflowException(
            "SegmindToS3Operator needs the Amazon provider: pip install 'airflow-provider-segmind[amazon]'"
        ) from err
    hook = S3Hook(aws_conn_id=aws_conn_id)
    if checksum_mode == "when_supported":
        return hook.get_conn()
    from botocore.config import Config

    try:
        extra = Config(request_checksum_calculation="when_required", response_checksum_validation="when_required")
    except TypeError:  # botocore < 1.36 sends no default checksums: nothing to turn off
        return hook.get_conn()
    return hook.get_client_type(config=hook.config.merge(extra))
