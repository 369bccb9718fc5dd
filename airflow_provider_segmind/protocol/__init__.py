"""The Segmind API's rules, as pure functions: no sockets, no Airflow, no clocks read implicitly.

Both transports (``requests`` on the worker, ``aiohttp`` in the triggerer) and the emulator use
this package, so URL building, parameter validation, answer parsing, error classification, the
retry policy and the poll schedule are written once and cannot drift between the sync and async
paths. A transport's whole job is: build the request from :mod:`.urls` (:func:`status_url`,
:func:`auth_headers`, ...), send it, wrap what came back in an :class:`HttpAnswer`, and hand that
to a ``parse_*`` function, which returns a typed value or raises the typed error from
:mod:`..exceptions`.

One module per concern, each readable on its own (read them in this order; each imports only
those above it):

- :mod:`.vocabulary`: default host, key header, model slug, job states, endpoints.
- :mod:`.text`: API keys removed from outside text; message sentences joined once.
- :mod:`.urls`: base URL, per-call URLs, auth headers, and what keeps the key on its origin.
- :mod:`.image_input`: an ``s3://`` input image: its URI, and when two presigned URLs name one object.
- :mod:`.params`: which parameters a model takes (SD3 Large in full).
- :mod:`.answer`: one HTTP answer, transport-neutral; its rate-limit wait and error text.
- :mod:`.retry`: what is retried, how long to wait, when a submit may be resent.
- :mod:`.errors`: the error taxonomy (which typed error an answer is, and what to do).
- :mod:`.responses`: successful answers into typed values.
- :mod:`.schedule`: the poll schedule and the watch's state machine (:class:`PollTracker`).
- :mod:`.learning`: what completed jobs of a model took, and where that places the next job's polls.
- :mod:`.rate_budget`: how one key's request limit is shared by the processes using it.
- :mod:`.rate_budget`: a key's requests a minute, split between the processes that share it.
- :mod:`.history`: Segmind's request-history API (URLs, query, records, answers).
- :mod:`.history_search`: finding a submit whose answer was lost among those records.
- :mod:`.spend`: the spend cap's arithmetic over the history's charges (today's spend, room).

Each name is imported from the module that defines it (``from airflow_provider_segmind.protocol.schedule
import PollSchedule``): this package re-exports nothing, so every name has one import path.
"""
