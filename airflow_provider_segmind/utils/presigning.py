"""The one S3 client that presigns: the ``S3Hook``'s own, signing with SigV4.

Public because two folders presign: the input images (``operators/_image_input.py``) and the
review's links (``utils/review_body.py``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["sigv4_client"]


def sigv4_client(hook: Any) -> Any:
    """The ``S3Hook``'s client (its credentials, region, endpoint and config), signing with SigV4.

    For presigned URLs botocore may otherwise sign with SigV2 (``AWSAccessKeyId``/``Signature``/
    ``Expires``, seen with boto3 1.44 on a custom endpoint and on ``S3Hook.generate_presigned_url``),
    which S3 refuses for buckets created since 2020. The one place a presigning client is made: the
    input images (``operators/_image_input.py``) and the review's links (``utils/review_body.py``).
    """
    from botocore.config import Config

    sigv4 = Config(signature_version="s3v4")
    config = hook.config
    return hook.get_client_type(config=config.merge(sigv4) if config is not None else sigv4)
