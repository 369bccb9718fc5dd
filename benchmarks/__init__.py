"""Benchmarks: where this provider stands against what users would do instead, in one run, on loopback.

Run them all with ``make bench`` (``python -m benchmarks``); ``--only 2`` (or ``--only 1,3``) runs some,
``--quick`` runs a smaller smoke check (~3 min), ``--json PATH`` overrides where the figures go. The
table printed at the end has one line per figure: benchmark, metric, ours, baseline, ratio, target,
met? -- followed by notes on method and on every missed target. Figures (every raw number behind the
table, plus the machine) go to ``benchmarks/results/latest.json`` for a full run of all six,
``latest-quick.json`` / ``latest-partial.json`` otherwise.

These are benchmarks, not tests: nothing asserts on timings. The machine they were written for has 2
shared cores, so absolute numbers move from run to run; compare the ratios within one run. Everything
listens on 127.0.0.1 on free ports, every load is bounded in count and time, and every process a
benchmark starts (emulators, moto, a TLS proxy, an Airflow cluster, worker children) runs in its own
process group and is stopped on every path, Ctrl-C and SIGTERM included. Airflow runs from a throw-away
``AIRFLOW_HOME`` (your ``~/airflow`` is never touched), with log level WARNING and the provider's own
logger at ERROR, so log formatting does not dominate CPU figures (3b counts its 429s from the emulator).

1. Worker-slot time per image (``b1_worker_slot``)
   (a) N images (8; 4 with ``--quick``) against the emulator (its own process; queue 0.5 s, inference
   10 s). Ours: ``SegmindTextToImageOperator(deferrable=True)``; its ``execute`` is timed until it
   raises ``TaskDeferred`` (validate, submit, record the request id in a task-state-store stand-in,
   defer), the trigger is rebuilt from ``serialize()`` and run on an event loop (all N at once; not
   worker time), then ``execute_complete`` is timed. Baseline: N threads each running the official
   SDK's blocking ``SegmindClient(base_url=emu/v1).run(...)``, as a task body would. Target: >= 20x less.
   (b) A real ``airflow standalone`` (``tests/integration/cluster.py``: scheduler, triggerer,
   LocalExecutor with 4 slots, SQLite) runs ``benchmarks/dags/``: a warm-up DAG, then the deferrable
   DAG and the SDK ``@task`` DAG (N mapped images each, one after the other). Each task's log is split
   into its processes (every process starts with ``::group::Pre Execute``); the time per image is the
   sum over the task's processes of last minus first log timestamp (both tries of a deferred task:
   before the deferral and after the resume), and "start-up" is the Pre Execute part (DAG bundle load
   and DAG file parse). Also reported: each DAG run's wall time. The measured DAGs run 5 rounds in the
   one Airflow; the rows pool them, and each round's ratio to the SDK gives min / median / max (target:
   min >= 12x). Skipped with ``--quick``.

1c. Images per minute at a key's rate limit (``b1c_rate_limit``)
   A real ``airflow standalone`` (scheduler, one triggerer, LocalExecutor) runs six DAGs at once
   (``benchmarks/dags/segmind_bench_rate_limit.py``) against two emulators that count every request per
   key (``--rate-limit 50`` and ``--rate-limit 5``, ``--rate-limit-scope all``; SD3-like jobs, queue
   0-2 s, inference 8-12 s). Per limit, three sides, each on its own key and its own pool of the same
   size, no retries: ours (the deferrable operator, connection extra ``requests_per_minute`` with the
   pool size), today (the same operator without the extra) and the SDK (``client.run`` in a task).
   Reported: images per minute (steady state, and over the whole run) as a fraction of R/3, 429
   answers, failed tasks, requests per image (the emulator's per-key counters). Real time: 200 jobs at
   50/min (5 pool slots a side) and 7 at 5/min (1 slot) (``--quick``: 4 at 50/min only). Target: >= 80%
   of R/3, no 429, no failure.

2. Triggerer capacity (``b2_triggerer``)
   The emulator runs as the CLI (its own process and GIL, ``--no-render-on-result``, queue 0-5 s,
   inference 8-12 s). For each run a fresh worker process (``python -m benchmarks.b2_triggerer
   worker``) submits N jobs over HTTP, snapshots the emulator's counters, its own CPU time and RSS,
   and then behaves like ``TriggerRunner``: imports the classpath (cached), rebuilds each trigger from
   its ``serialize()`` kwargs after a JSON round trip, and runs ``greenback.ensure_portal()`` +
   ``async for event in trigger.run()`` as one asyncio task per trigger, all on one loop. Reported per
   N (1,000 and 5,000; 500 with ``--quick``): triggers finished; CPU seconds per 1,000 status polls
   (worker user+system CPU during the run / the emulator's status-poll count); peak memory per
   trigger (RSS peak sampled every 0.1 s minus RSS before, / N); TCP connections the emulator
   accepted; detection latency p50/p99 (event receipt minus the job's ``completed_at`` from
   ``/_emulator/jobs``). Baseline, same run: a minimal coroutine with the same ``PollTracker``
   schedule that opens a new ``aiohttp.ClientSession`` for every call (the style of several official
   triggers). Extra rows (full run only) repeat N=1,000 over https through a TLS-terminating proxy,
   because Segmind's API is https and a new connection there costs a TLS handshake, which plain
   loopback HTTP hides. The hook's connector limit (100) is not raised. Targets at 1,000: p99 latency
   <= poll interval + 0.5 s, CPU per poll <= 0.5x the baseline's, connections <= 1 per trigger.

3. Poll economy under rate limits (``b3_poll_economy``)
   (a) 40 jobs a side (16 with ``--quick``), durations from one seeded stream (queue 0-5 s, inference
   8-12 s): ours submits with ``SegmindHook`` and runs the real trigger with the default schedule;
   the SDK runs ``submit_async(...).wait(interval=1.0)`` in a thread per job; both at once against
   one emulator with one key each, so its per-key counters give each side's status calls. Targets:
   <= 0.5x the SDK's status calls per job, p95 detection latency <= 1.5 s.
   (b) 20 jobs a side against an emulator limiting every authenticated request to 50/min per key
   (``--rate-limit 50 --rate-limit-scope all``): ours = hook submit (its retry policy waits out 429s)
   + 20 triggers; SDK = 20 threads of ``client.run``. Reported: completed jobs, and jobs aborted by a
   429. Runs alongside (a) on its own emulator. With ``--quick``: 6 jobs, 5 requests per 3 s window.
   (c) Polls that learn each model's runtime, per profile (SD3 Large 8-12 s; a 60-90 s model; a 3-10 min
   model time-scaled 1/10 -- emulator timings, our schedule's seconds and the SDK's interval all run 10x
   faster, figures reported in real seconds; ``--quick``: 8 jobs, scales 1/4 and 1/20), each on its own
   emulator: round 1 = 20 jobs of the SDK's 1 s polling and 20 of today's schedule at once; round 2 = 20
   jobs after round 1's completions are in the process's book (the learned schedule). Reported per side:
   status calls per job (per-key counts) and p95 detection latency. Targets for the learned side: <= 0.5x
   the SDK's calls, p95 <= max(1.5 s, 5% of the job's submit-to-completion time).

4. S3 streaming (``b4_s3_streaming``)
   A 200 MiB output (25 MiB with ``--quick``) served by the emulator's ``/_emulator/blob/{n}``
   (``content_type=image/jpeg``) goes into moto (``ThreadedMotoServer``, own process) three ways, each
   in a fresh child process after a 1 MiB warm-up of the same path: ours, ``SegmindToS3Operator.execute``
   (``allow_insecure_loopback=True``, ``max_size`` raised to fit, no manifest, no asset alias); the
   baseline, ``HttpToS3Operator``'s way (``requests.get(url).content`` then ``S3Hook.load_bytes``); and
   the reference, boto3 ``upload_fileobj`` of the same bytes from a local file. Memory growth = RSS
   high-water (``ru_maxrss``, cross-checked by 5 ms sampling) minus RSS just before the transfer;
   throughput = bytes / wall time (download + upload for ours). Targets: growth <= 64 MiB, throughput
   >= 0.8x ``upload_fileobj``.

5. Import and parse cost (``b5_import_parse``)
   Import: fresh interpreters (median of 5) time ``import airflow.sdk``, then the operator modules a
   DAG imports (operators, sensors, transfers) on top, and list which heavy libraries (boto3, botocore,
   aiohttp, PIL, requests, ...) those modules add to ``sys.modules``. Parse: for every ``*.py`` in
   ``example_dags/`` (or, if there is none, the benchmark's own deferrable DAG, labelled a stand-in),
   fresh interpreters (median of 3) import Airflow and ``DagBag`` (Airflow's own start, not counted)
   and then time ``DagBag(dag_folder=<file>)``; a one-task DAG without the provider gives Airflow's
   floor. Targets: <= 150 ms over ``airflow.sdk``, no boto3/aiohttp/PIL, each DAG < 0.5 s.

6. The Segmind page with 10,000 generations (``b6_ui_page``)
   10,000 manifests of the transfer's shape (2,000 with ``--quick``; 20 DAGs, 30 days) in moto (own
   process), the newest page's images beside them, the DAGs in a throw-away metadata DB. Through
   Airflow's own api-server app in this process (plugin mounted, SimpleAuthManager, a real JWT): the
   cold page view (list + one GET per manifest), warm views (memory), a view after the listing
   expired (list only), filtered views, the JSON summary, the first page's thumbnails (cold, cached),
   and, with Chromium installed, navigation until every thumbnail loaded. No target: where time goes.

7. Spend cap slack across processes (``b7_spend_slack``)
   4 worker processes (spawned) run "tasks" back to back against one emulator whose request history
   lags 0, 2 and 5 s with the rows absent: each task forgets the process's ledger cache and own
   submits (as a fresh task process would), runs the spend check (``operators/_spend.py``), submits,
   and waits 1 s. The cap is worth 40 images (10 with ``--quick``). Reported: images billed per lag;
   target: at most the cap plus workers x ceil(lag / task duration) (docs/operating.md).
"""
