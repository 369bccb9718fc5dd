"""Fault-injection soak: nothing lost, nothing billed twice, nothing leaked (issue 7).

Runs the marketing pipeline's operators (``SegmindTextToImageOperator``, deferrable, then
``SegmindToS3Operator`` over its output, mapped per prompt; see :mod:`tests.soak.soak_dag`) over
many prompts with ``dag.test()`` (Airflow 3.3: real task runner, real retries, real
``task_state_store``, triggers run inline from their serialized kwargs) against:

- the Segmind emulator with random faults on submit, status, result and media calls: 10% 429,
  3% 500 + 2% 502, 2% connection resets, 3% slow answers, 2% truncated media, 5% FAILED jobs;
- task/trigger-level faults for a share of the prompts (:mod:`tests.soak.chaos`): triggerer
  restarts mid-job (the trigger cancelled and rebuilt from ``serialize()``), jobs expired
  mid-flight, triggers giving up after a run of errors, lost trigger events and worker crashes
  after resuming (each forcing a task retry after deferral), plus prompts that FAIL on every
  submit and content-blocked prompts;
- an S3 endpoint that fails a share of writes (:mod:`tests.soak.s3_proxy`, in front of moto):
  500/503 answers, resets before the request is applied, answers lost after it was applied, and an
  outage longer than boto3's retries for some prompts.

The request history answers in the shapes of the emulator's history profiles (``HISTORY_PROFILES``):
all of them at once in the short form, one profile per segment of the prompts in the long form.

Then :func:`tests.soak.harness.audit` checks that every prompt ends as a verified image + manifest
in S3 or as a failed task whose exception names the cause (a safe-rule failure is allowed and
named); that paid submissions equal prompts plus resubmissions of FAILED or expired jobs only; that
no Segmind request is owned by two task instances (XComs, records, triggers and the
``segmind_claim_*`` Variables); that the API key appears nowhere (logs, database,
XCom, task state store, trigger kwargs, events, S3 objects); that no multipart upload, partial or
rewritten object is left in S3; and that the run finished within its bound with every server and
process it started stopped. It prints a summary table.

Short form (32 prompts, part of ``pytest``): ``pytest tests/soak``.
Long form: ``python -m tests.soak --prompts 200 --runs 3`` (``make soak``).
"""
