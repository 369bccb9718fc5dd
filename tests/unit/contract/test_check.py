"""Issue 23, the contract check: run against the emulator under every history profile (and the
defaults), it must classify each one correctly, and the profiles must come out different (a check
that cannot tell them apart proves nothing). Also: it spends nothing without ``--spend-up-to``, stops
before its cap, tells whether status polls count from the rate-limit counters, never shows the key,
and the emulator loads what it writes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_segmind.contract import check as contract_check
from airflow_provider_segmind.contract.cli import main
from airflow_provider_segmind.emulator.__main__ import build_parser, config_from_args
from airflow_provider_segmind.emulator.config import (
    HISTORY_PROFILES,
    HISTORY_TIME_FORMATS,
    EmulatorConfig,
    load_account_profile,
)
from airflow_provider_segmind.emulator.request_history import history_body, history_time
from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.hooks._cache import _CATALOGUE_CACHE
from airflow_provider_segmind.protocol.contract import (
    ACCOUNT_PROFILE_KIND,
    body_format,
    id_form,
    media_handling,
    status_polls_count,
    time_format,
)

REPO = Path(__file__).resolve().parents[3]
CONN_ID = "segmind_contract"
#: Every setting a history profile may set: the switches the check must classify.
SWITCHES = sorted({name for bundle in HISTORY_PROFILES.values() for name in bundle})
#: A cap that allows both paid images (the emulator bills 0.04 each; the check estimates 0.102).
ENOUGH = "1.0"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    profile: dict[str, Any]
    emulator: EmulatorConfig
    key: str
    stats: dict[str, Any]


def run_check(emu: SegmindEmulator, *args: str, profile_out: Path | None = None) -> Run:
    """``main()`` in this process against ``emu`` (a connection in the environment), output captured."""
    conn = json.dumps({"conn_type": "segmind", "password": emu.api_key, "host": emu.base_url})
    out, err = io.StringIO(), io.StringIO()
    argv = ["--conn-id", CONN_ID, *args] + (["--profile-out", str(profile_out)] if profile_out else [])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn)
        patch.setattr(contract_check, "STATUS_INTERVAL", 0.2)  # the emulator's jobs take 0.25 s
        _CATALOGUE_CACHE.clear()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    profile = json.loads(profile_out.read_text()) if profile_out is not None and profile_out.exists() else {}
    return Run(code, out.getvalue(), err.getvalue(), profile, emu.config, emu.api_key, emu.stats())


@pytest.fixture(scope="module")
def classified(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Run]:
    """The check's run under a history profile, once per profile for the whole module (memoized)."""
    runs: dict[str, Run] = {}

    def run(name: str) -> Run:
        if name not in runs:
            config = EmulatorConfig.for_profile("fast", **HISTORY_PROFILES[name])
            with SegmindEmulator(config) as emu:
                path = tmp_path_factory.mktemp(f"profile-{name}") / "segmind-profile.json"
                runs[name] = run_check(emu, "--spend-up-to", ENOUGH, profile_out=path)
        return runs[name]

    return run


def shown(value: Any) -> str:
    """A setting's value as the table writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ------------------------------------------------------------------ every history profile


@pytest.mark.parametrize("name", list(HISTORY_PROFILES))
def test_each_history_profile_is_classified_as_the_emulator_answers(
    classified: Callable[[str], Run], name: str
) -> None:
    run = classified(name)
    assert run.code == 0, run.out + run.err
    assert run.stats["submissions"] == 2  # two paid images, no more
    written = run.profile["emulator"]
    loaded = EmulatorConfig.for_profile("fast", **load_account_profile(run.profile))
    expected = run.emulator
    lag = expected.history_lag_seconds
    for switch in SWITCHES:
        assert switch in written or switch == "history_lag_mode", (switch, written)
        if switch == "history_lag_seconds":
            # Measured by polling every 0.25 s: at least the lag, and not much more.
            assert lag <= getattr(loaded, switch) < lag + 1.5, (switch, written)
            assert "history_lag_seconds=" in run.out
            continue
        assert getattr(loaded, switch) == getattr(expected, switch), (name, switch, written)
        if switch in written:
            assert f"{switch}={shown(written[switch])}" in run.out, (switch, run.out)  # the table says so
    # Nothing in the table is a contradiction, and the history rows all hold.
    assert "DIFFERS" not in run.out
    for secret_place in (run.out, run.err, json.dumps(run.profile)):
        assert run.key not in secret_place


def test_the_classifications_differ_across_profiles(classified: Callable[[str], Run]) -> None:
    def classification(name: str) -> tuple[Any, ...]:
        written = dict(classified(name).profile["emulator"])
        lags = written.pop("history_lag_seconds") > 1  # measured, so compared as "lags or not"
        return (*sorted(written.items()), ("lags", lags))

    seen = {name: classification(name) for name in HISTORY_PROFILES}
    assert len(set(seen.values())) == len(HISTORY_PROFILES), seen
    assert all(value != seen["default"] for name, value in seen.items() if name != "default")


def test_the_all_profile_reads_as_every_shape_at_once(classified: Callable[[str], Run]) -> None:
    written = classified("all").profile["emulator"]
    assert written | {"history_lag_seconds": 2.0} == {
        **HISTORY_PROFILES["all"],
        "history_lag_seconds": 2.0,
    }
    out = classified("all").out
    assert "set history_user_id=user-0" in out  # the team's own user, to filter teammates out
    assert "set history_timezone=+05:30" in out  # naive India time: one zone to read it in


# ------------------------------------------------------------------ spending


def test_without_spend_up_to_it_refuses_to_spend_and_runs_the_free_checks(emulator_factory: Any) -> None:
    emu = emulator_factory()
    run = run_check(emu)
    assert run.code == 0, run.out + run.err
    assert run.stats["submit_attempts"] == 0
    assert run.stats["credit_checks"] >= 1
    assert run.stats["catalogue_calls"] == 1
    assert run.stats["history_calls"] >= 1
    assert "Not spending: without --spend-up-to USD only the free checks run" in run.out
    assert "| not checked: no --spend-up-to, so nothing was spent |" in run.out
    assert "status 404, result 404: 'Request {request_id} not found'" in run.out
    assert run.key not in run.out + run.err


def test_the_free_checks_read_the_rows_already_in_the_history(emulator_factory: Any) -> None:
    emu = emulator_factory(**HISTORY_PROFILES["sdk-repr"])
    import requests

    requests.post(
        f"{emu.base_url}/v2/stable-diffusion-3-large-txt2img",
        json={"prompt": "an earlier request"},
        headers={"x-api-key": emu.api_key},
        timeout=10,
    ).raise_for_status()
    run = run_check(emu, profile_out=None)
    assert run.stats["submissions"] == 1  # only the one above
    assert "request_body repr" in run.out
    assert "Not checked (no --spend-up-to, so nothing was spent): media, declared keys" in run.out


def test_it_stops_before_a_second_image_would_pass_the_cap(emulator_factory: Any, tmp_path: Path) -> None:
    emu = emulator_factory(cost=0.1)
    run = run_check(emu, "--spend-up-to", "0.15", profile_out=tmp_path / "p.json")
    assert run.code == 0, run.out + run.err
    assert run.stats["submissions"] == 1
    assert "a second image (~$0.102) would pass --spend-up-to 0.15" in run.out
    assert run.profile["spent_usd"] == pytest.approx(0.1)
    assert "history_strip_media" not in run.profile["emulator"]  # not checked without the second image
    assert "| not checked: a second image" in run.out


def test_a_cap_below_one_image_spends_nothing(emulator_factory: Any) -> None:
    emu = emulator_factory()
    run = run_check(emu, "--spend-up-to", "0.05")
    assert run.stats["submit_attempts"] == 0
    assert "is below one SD3 Large image" in run.out


def test_bad_arguments_and_a_missing_connection_exit_2(emulator: Any) -> None:
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(io.StringIO()):
        main(["--spend-up-to", "-1"])
    assert info.value.code == 2
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(["--conn-id", "no_such_connection_here"]) == 2
    assert "no_such_connection_here" in err.getvalue()


# ------------------------------------------------------------------ rate limits


@pytest.mark.parametrize("scope", ["submit", "all"])
def test_it_tells_whether_status_polls_count_from_the_counters(
    emulator_factory: Any, scope: str, tmp_path: Path
) -> None:
    emu = emulator_factory(rate_limit_plan="pro", rate_limit_scope=scope, rate_limit_headers=True)
    run = run_check(emu, "--spend-up-to", ENOUGH, profile_out=tmp_path / "p.json")
    assert run.code == 0, run.out + run.err
    assert run.profile["emulator"]["rate_limit_scope"] == scope
    assert run.profile["emulator"]["rate_limit"] == 50
    assert f"(rate_limit_scope={scope})" in run.out
    assert ("yes: the remaining count fell" if scope == "all" else "no: the remaining count stayed") in run.out


def test_without_counters_whether_polls_count_is_unknown(classified: Callable[[str], Run]) -> None:
    run = classified("default")
    assert "unknown: status answers carry no rate-limit headers" in run.out
    assert "rate_limit_scope" not in run.profile["emulator"]


def test_status_polls_count_reads_counters_only() -> None:
    assert status_polls_count({"x-ratelimit-remaining": "5"}, {"x-ratelimit-remaining": "4"})[0] == "all"
    assert status_polls_count({"x-ratelimit-remaining": "5"}, {"x-ratelimit-remaining": "5"})[0] == "submit"
    assert status_polls_count({"x-ratelimit-remaining": "5"}, {"x-ratelimit-remaining": "9"})[0] is None
    unknown = status_polls_count({"x-rate-limit-reset-at-utc": "x"}, {"x-rate-limit-reset-at-utc": "y"})
    assert unknown == (None, "unknown: status answers carry only a reset time, no counters")


# ------------------------------------------------------------------ the classifiers, on the emulator's own writing


@pytest.mark.parametrize("fmt", HISTORY_TIME_FORMATS)
def test_every_time_format_the_emulator_writes_is_recognised(fmt: str) -> None:
    sent_at = 1_800_000_000.25
    config = EmulatorConfig(history_time_format=fmt)  # type: ignore[arg-type]
    assert time_format(history_time(config, sent_at), sent_at)[0] == fmt


@pytest.mark.parametrize("body_fmt", ["object", "json", "repr"])
@pytest.mark.parametrize("media", ["keep", "absent", "replaced"])
def test_bodies_and_media_as_the_emulator_writes_them(body_fmt: str, media: str) -> None:
    config = EmulatorConfig(history_body_format=body_fmt, history_strip_media=media)  # type: ignore[arg-type]
    sent = {"prompt": "p", "image": "http://127.0.0.1/media/x.jpeg", "strength": 0.6}
    value = history_body(config, "some-img2img-model", sent)
    assert body_format(value) == body_fmt
    from airflow_provider_segmind.protocol.contract import decoded_body

    assert media_handling(sent, decoded_body(value) or {}, ["image"]) == media


def test_ids_are_told_apart() -> None:
    v2 = "2c7f59ea-13f1-402c-9353-915a2b5a2124"
    assert id_form(v2, v2) == "v2"
    assert id_form(v2.replace("-", ""), v2) == "hex32"
    assert id_form(v2.upper(), v2) is None
    assert id_form("5708ee2c54894941661597cd38eb68af", v2) is None  # another request altogether


# ------------------------------------------------------------------ the profile file and the emulator


def test_the_profile_is_refused_unless_it_is_one(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"kind": "something else", "version": 1, "emulator": {}}))
    with pytest.raises(ValueError, match="not an account profile"):
        load_account_profile(path)
    path.write_text(json.dumps({"kind": ACCOUNT_PROFILE_KIND, "version": 1, "emulator": {"credits": 5}}))
    with pytest.raises(ValueError, match="may not"):
        load_account_profile(path)
    path.write_text(json.dumps({"kind": ACCOUNT_PROFILE_KIND, "version": 1, "emulator": {"history_id_form": "b64"}}))
    with pytest.raises(ValueError, match="history_id_form"):
        EmulatorConfig.from_account_profile(path)


def test_through_python_dash_m_and_back_into_the_emulator_cli(emulator_factory: Any, tmp_path: Path) -> None:
    emu = emulator_factory(**HISTORY_PROFILES["all"])
    out_file = tmp_path / "profile.json"
    env = {
        **os.environ,
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(
            {"conn_type": "segmind", "password": emu.api_key, "host": emu.base_url}
        ),
    }
    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_segmind.contract", "--conn-id", CONN_ID, "--spend-up-to", ENOUGH,
         "--profile-out", str(out_file)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for text in (done.stdout, done.stderr, out_file.read_text()):
        assert emu.api_key not in text
    assert "| assumption | what the account answered | what the provider does about it |" in done.stdout
    assert f"Profile written to {out_file}" in done.stdout
    # The emulator's own command line loads it, on top of a named profile; flags still win.
    config = config_from_args(build_parser().parse_args(["--profile", "fast", "--profile", str(out_file)]))
    for switch in SWITCHES:
        if switch != "history_lag_seconds":
            assert getattr(config, switch) == getattr(emu.config, switch), switch
    assert config.inference_time == EmulatorConfig.for_profile("fast").inference_time
    flagged = config_from_args(build_parser().parse_args(["--profile", str(out_file), "--history-profile", "default"]))
    assert flagged.history_body_format == "object"
