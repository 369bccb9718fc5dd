"""The operators' extra link: "Segmind output", the first output URL of the try that just ended.

Registered in ``get_provider_info`` under its public path
``airflow_provider_segmind.operators.segmind.SegmindOutputLink`` (re-exported there, where users
and Airflow's provider manager import it).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import BaseOperatorLink

__all__ = ["SegmindOutputLink", "output_link"]


def output_link(url: Any) -> str:
    """What the link shows for an output URL: the URL if it is http(s), else nothing.

    Also what a trigger that ends the task itself (``end_from_trigger``) stores under the link's
    XCom key, since no task process then runs ``get_link``.
    """
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else ""


class SegmindOutputLink(BaseOperatorLink):
    """Extra link "Segmind output": the first generated output URL of the try that just ended.

    Segmind's output URLs are public, unguessable and kept about 7 days; the link is empty for a
    task that produced none (failed, or an inline ``base64`` output).

    Airflow 3 calls ``get_link`` once, in the task's own process when the try ends (the UI then
    reads the stored result), on the operator instance that ran the try. So the URL is read from
    that instance, not looked up in XCom: a lookup of a key a failed try never pushed made Airflow's
    client log an ``XCom not found`` error after every failed Segmind task.
    """

    name = "Segmind output"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return output_link(getattr(operator, "output_url", None))
