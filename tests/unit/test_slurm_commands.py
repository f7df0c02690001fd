"""The Slurm backend's pure parts: sbatch's options, the batch script, squeue's JSON, the relay's
Comment, reasons in words, endings (jupyter_worker/executor/slurm/commands.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from typing import Any

import pytest
from traitlets.config import Config

from jupyter_worker.executor.slurm import backend as backend_module
from jupyter_worker.executor.slurm import commands
from jupyter_worker.executor.slurm.backend import _Pull, complete_length, node_job_request
from jupyter_worker.executor.slurm.config import SlurmBackendConfig
from jupyter_worker.limits import Limits
from jupyter_worker.sandbox import LaunchSpec
from jupyter_worker.sandbox.output import HEADER
from jupyter_worker.spec import Reason

# What Slurm 22.05.8's `squeue --json` said on the test cluster (tests/slurm/cluster.py): three
# jobs filling the nodes and one waiting; then their ends (cancelled, completed with a relay's
# Comment, `exit 3`). Fields trimmed to those the backend reads and a few more; values as seen.
_META = {
    "plugin": {"type": "openapi/v0.0.38", "name": "Slurm OpenAPI v0.0.38"},
    "Slurm": {"version": {"major": 22, "micro": 8, "minor": 5}, "release": "22.05.8"},
}


def _job(job_id, state, reason, node, comment, *, exit_code):
    return {
        "job_id": job_id,
        "job_state": state,
        "state_reason": reason,
        "nodes": node,
        "batch_host": node,
        "comment": comment,
        "exit_code": exit_code,
        "name": "wrap",
        "user_id": 65534,
        "user_name": "nobody",
        "partition": "debug",
    }


PENDING_SAMPLE = json.dumps(
    {
        "meta": _META,
        "errors": [],
        "jobs": [
            _job(1, "RUNNING", "None", "n1", "", exit_code=0),
            _job(2, "RUNNING", "None", "n2", "", exit_code=0),
            _job(3, "RUNNING", "None", "n3", "", exit_code=0),
            _job(4, "PENDING", "Resources", "", "", exit_code=0),
        ],
    }
)
FINAL_SAMPLE = json.dumps(
    {
        "meta": _META,
        "errors": [],
        "jobs": [
            _job(1, "CANCELLED", "None", "n1", "", exit_code=15),
            _job(4, "COMPLETED", "None", "n2", "jw1:port=123,job=abc", exit_code=0),
            _job(5, "FAILED", "NonZeroExitCode", "n2", "", exit_code=768),
        ],
    }
)


def state(**fields) -> commands.SlurmState:
    return commands.SlurmState(**{"job_id": "7", "state": "FAILED", **fields})


# ---- sbatch's options


def test_sbatch_args_map_memory_cpu_and_timeout_with_the_margin_rounded_up_to_minutes():
    limits = Limits.parse({"memory_mb": "512M", "cpu_percent": 150, "timeout_s": "10m"})
    args = commands.sbatch_args(limits, {}, "jw-12345678", 120)
    assert "--mem=576M" in args  # with the relay's own 64 MiB
    assert "--cpus-per-task=2" in args
    assert "--time=12" in args
    assert args[:4] == ["--parsable", "--job-name=jw-12345678", "--output=/dev/null", "--chdir=/tmp"]


def test_sbatch_args_round_a_timeout_and_margin_up_to_the_next_whole_minute():
    assert "--time=2" in commands.sbatch_args(Limits.parse({"timeout_s": 61}), {}, "jw-x", 0)
    assert "--time=1" in commands.sbatch_args(Limits.parse({"timeout_s": 1}), {}, "jw-x", 0)
    assert "--time=3" in commands.sbatch_args(Limits.parse({"timeout_s": 30}), {}, "jw-x", 120)


def test_sbatch_args_ask_at_least_one_cpu_for_a_small_cpu_share():
    assert "--cpus-per-task=1" in commands.sbatch_args(Limits.parse({"cpu_percent": 10}), {}, "jw-x", 0)
    assert "--cpus-per-task=3" in commands.sbatch_args(Limits.parse({"cpu_percent": 201}), {}, "jw-x", 0)


def test_sbatch_args_leave_out_limits_that_are_not_set():
    args = commands.sbatch_args(Limits(), {}, "jw-x", 120)
    assert not [a for a in args if a.startswith(("--mem", "--cpus-per-task", "--time", "--partition"))]


def test_sbatch_args_pass_the_placement_through_and_skip_empty_parts():
    args = commands.sbatch_args(Limits(), {"partition": "gpu", "account": "", "qos": "high"}, "jw-x", 0)
    assert "--partition=gpu" in args and "--qos=high" in args
    assert not [a for a in args if a.startswith("--account")]


# ---- the batch script


def _run_script(script: str, tmp_path) -> str:
    """The script run by sh with a stand-in python that prints its stdin."""
    python = tmp_path / "fake python"
    python.write_text("#!/bin/sh\ncat\n")
    python.chmod(0o755)
    path = tmp_path / "script.sh"
    path.write_text(script)
    done = subprocess.run(["sh", str(path)], capture_output=True, text=True, check=True)
    return done.stdout


def test_the_batch_script_hands_the_step_request_to_the_relay_unchanged(tmp_path):
    request = commands.step_request({"command": ["echo", "hi"]}, "/run/x/%n.sock", "ab" * 32, 600)
    script = commands.batch_script(str(tmp_path / "fake python"), request)
    assert script.startswith("#!/bin/sh\n")
    assert "-I -m jupyter_worker.slurmstep" in script
    assert json.loads(_run_script(script, tmp_path)) == request


def test_a_hostile_step_request_cannot_end_the_heredoc_or_reach_the_shell(tmp_path):
    marker = tmp_path / "pwned"
    evil = [
        "JW_STEP_0000000000000000",
        f"\nJW_STEP_x\ntouch {marker}\n",
        f"$(touch {marker})",
        f"`touch {marker}`",
        "'; touch x; '",
        "\r\n#SBATCH --uid=0\n",
        "\u2028\u2029\x00\x1b",
    ]
    request = commands.step_request({"command": evil, "env": {"A": "$HOME"}}, "/s", "00" * 32, 1)
    script = commands.batch_script(str(tmp_path / "fake python"), request)
    assert script.count("\n") == 4  # shebang, exec, the one-line request, the delimiter
    assert json.loads(_run_script(script, tmp_path)) == request
    assert not marker.exists()


def test_the_relays_python_path_is_quoted_in_the_batch_script():
    script = commands.batch_script("/opt/my env/bin/python; rm -rf /", {"version": 1})
    assert "exec '/opt/my env/bin/python; rm -rf /' -I -m" in script


# ---- squeue --json (22.05)


def test_squeue_json_of_slurm_22_05_is_read_with_states_reasons_and_nodes():
    states = commands.parse_squeue(PENDING_SAMPLE)
    assert set(states) == {"1", "2", "3", "4"}
    assert states["1"].running and states["1"].node == "n1"
    assert states["4"].waiting and states["4"].reason == "Resources" and states["4"].node == ""


def test_squeue_json_exit_codes_are_wait_statuses_split_into_code_and_signal():
    states = commands.parse_squeue(FINAL_SAMPLE)
    assert (states["5"].state, states["5"].exit_code, states["5"].signal) == ("FAILED", 3, None)
    assert (states["1"].state, states["1"].exit_code, states["1"].signal) == ("CANCELLED", None, 15)
    assert (states["4"].exit_code, states["4"].comment) == (0, "jw1:port=123,job=abc")
    assert all(s.final for s in states.values())


def test_squeue_json_is_filtered_to_the_wanted_jobs():
    # 22.05's squeue --json lists every job whatever --jobs says
    assert set(commands.parse_squeue(FINAL_SAMPLE, {"5", "99"})) == {"5"}


def test_squeue_json_of_later_versions_with_state_lists_and_exit_objects_is_read():
    later = {
        "jobs": [
            {
                "job_id": 9,
                "job_state": ["RUNNING", "COMPLETING"],
                "exit_code": {"status": ["SIGNALED"], "return_code": {"set": True, "number": 0}, "signal": {"id": 9}},
                "user_id": {"set": True, "number": 1000},
            }
        ]
    }
    found = commands.parse_squeue(json.dumps(later))["9"]
    assert (found.state, found.signal, found.user_id) == ("RUNNING", 9, 1000)


def test_squeue_output_that_is_not_its_json_is_one_error_in_words():
    for bad in ("", "squeue: error: slurm_load_jobs error: Unable to contact slurm controller", "[]", '{"jobs": 1}'):
        with pytest.raises(commands.SlurmError):
            commands.parse_squeue(bad)


def test_squeue_entries_of_the_wrong_shape_are_skipped():
    text = json.dumps({"jobs": [1, "x", {"job_id": "12"}, {"job_id": True}, {"job_id": 3, "job_state": 5}]})
    states = commands.parse_squeue(text)
    assert list(states) == ["3"] and states["3"].state == ""


# ---- squeue's text form (the poll)

MARK = "JW" + "0" * 32 + ":"


def _line(*fields: str) -> str:
    """One job as squeue prints it with squeue_env's format (id, state, reason, nodes, batch host,
    name, user id, Comment)."""
    return "".join(MARK + field for field in fields) + "\n"


def test_squeue_text_form_is_read_with_states_reasons_nodes_and_comments():
    # as Slurm 22.05.8 printed them on the test cluster: a pending job has no nodes, batch host n/a
    out = _line("4", "PENDING", "Resources", "", "n/a", "jw-0a1b2c3d", "1000", "(null)") + _line(
        "5", "RUNNING", "None", "n2", "n2", "jw-4e5f6a7b", "1001", "jw1:port=40123,job=0f3c-77aa"
    )
    states = commands.parse_squeue_text(out, MARK)
    assert states["4"].waiting and states["4"].reason == "Resources" and states["4"].node == ""
    assert states["4"].comment == "" and (states["4"].name, states["4"].user_id) == ("jw-0a1b2c3d", 1000)
    assert states["5"].running and states["5"].node == "n2"
    assert commands.parse_comment(states["5"].comment) == commands.Comment(40123, "0f3c-77aa")
    assert set(commands.parse_squeue_text(out, MARK, {"5", "99"})) == {"5"}


def test_a_comment_with_newlines_and_separators_cannot_forge_another_job_or_field():
    # the Comment and the name are the user's to set: lines, bars, what looks like a record of
    # another job; only a field preceded by the poll's secret mark counts
    forged = "x|y\n" + "7|RUNNING|None|n1|n1|jw-x|0|jw1:port=1,job=a\n" + "JW" + "1" * 32 + ":7"
    out = _line("6", "RUNNING", "None", "n1", "n1", "a\nname|", "1000", forged) + _line(
        "8", "COMPLETED", "None", "n3", "n3", "jw-8", "1000", "jw1:port=2,job=b"
    )
    states = commands.parse_squeue_text(out, MARK)
    assert set(states) == {"6", "8"}
    assert states["6"].comment == forged and commands.parse_comment(states["6"].comment) == commands.Comment()
    assert states["6"].name == "a\nname|" and states["8"].final


def test_squeue_text_that_is_not_the_polls_form_is_one_error_in_words():
    for bad in ("squeue: error: Invalid job id specified\n", "1|RUNNING\n", MARK + "1" + MARK + "RUNNING\n"):
        with pytest.raises(commands.SlurmError):
            commands.parse_squeue_text(bad, MARK)
    assert commands.parse_squeue_text("", MARK) == {} and commands.parse_squeue_text("\n", MARK) == {}


def test_squeue_text_skips_ids_that_are_not_plain_job_ids_and_odd_user_ids():
    out = _line("12_3", "RUNNING", "None", "n1", "n1", "a", "1000", "") + _line(
        "13", "running", "None", "n1", "n1", "b", "-1", ""
    )
    states = commands.parse_squeue_text(out, MARK)
    assert list(states) == ["13"] and states["13"].running and states["13"].user_id is None


def test_the_polls_mark_is_fresh_each_time_and_goes_to_squeue_in_its_environment():
    first, second = commands.squeue_mark(), commands.squeue_mark()
    assert first != second and len(first) >= 32
    env = commands.squeue_env({"PATH": "/usr/bin"}, first)
    assert env["PATH"] == "/usr/bin" and env["SQUEUE_FORMAT"].count(first) == len(commands.SQUEUE_FIELDS)
    assert env["SQUEUE_FORMAT"].endswith(first + "%k")  # the Comment last: it runs to the next mark


def test_squeue_is_asked_for_the_jobs_by_id_and_a_forgotten_single_job_is_told_apart():
    assert commands.squeue_args(["12", "3", "12"]) == ["--noheader", "--states=all", "--jobs=3,12"]
    assert commands.squeue_args(["5"]) == ["--noheader", "--states=all", "--jobs=5"]
    assert commands.squeue_args(None) == ["--noheader", "--states=all"]
    # what 22.05 says for one job it no longer knows (the poll counts it absent), not for other failures
    assert commands.forgotten("slurm_load_jobs error: Invalid job id specified\n")
    assert not commands.forgotten("slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n")


# ---- the relay's Comment


def test_a_relays_port_comment_is_read():
    assert commands.parse_comment("jw1:port=40123,job=0f3c-77aa") == commands.Comment(40123, "0f3c-77aa")


def test_a_relays_error_comment_is_read_escaped_and_cut():
    found = commands.parse_comment("jw1:error=no jupyter-worker executor on node n3 (/run/x.sock: missing)")
    assert found.error == "no jupyter-worker executor on node n3 (/run/x.sock: missing)"
    hostile = commands.parse_comment("jw1:error=\x1b[31mred\u202e" + "x" * 1000)
    assert hostile.error is not None and "\x1b" not in hostile.error and "\u202e" not in hostile.error
    assert "\\x1b" in hostile.error and len(hostile.error) <= commands.MAX_WORDS


@pytest.mark.parametrize(
    "comment",
    [
        "",
        "hello",
        "jw1:port=0,job=a",
        "jw1:port=70000,job=a",
        "jw1:port=123456,job=a",
        "jw1:port=80,job=../../etc",
        "jw1:port=80,job=a b",
        "jw1:port=80,job=a,port=81",
        "jw1:port=-1,job=a",
        "jw1:port=80",
        "JW1:port=80,job=a",
        "jw2:port=80,job=a",
        None,
    ],
)
def test_a_comment_that_is_not_the_relays_says_nothing(comment):
    assert commands.parse_comment(comment) == commands.Comment()


def test_node_addresses_are_read_from_scontrol_show_node():
    line = "NodeName=n1 Arch=x86_64 CoresPerSocket=2 NodeAddr=203.0.113.146 NodeHostName=n1 Version=22.05.8"
    assert commands.parse_node_addr(line) == "203.0.113.146"
    assert commands.parse_node_addr("NodeName=n1 NodeHostName=n1") is None
    assert commands.parse_node_addr("NodeName=n1 NodeAddr=a;b") is None


# ---- words and endings


def test_slurm_reasons_are_said_in_words_with_the_code():
    assert commands.waiting_words("Resources") == "Slurm: waiting for resources on the cluster (Resources)"
    assert commands.waiting_words("Priority") == "Slurm: waiting behind higher-priority jobs (Priority)"
    assert "limit of its QOS" in commands.waiting_words("QOSMaxCpuPerUserLimit")
    assert commands.waiting_words("SomethingNew") == "Slurm: SomethingNew"
    assert commands.waiting_words("Bad\x1b[2J") == "Slurm: Bad\\x1b[2J"


def test_endings_without_the_nodes_outcome_map_to_our_reasons():
    assert commands.final_outcome(state(state="CANCELLED", signal=15)).reason is Reason.STOPPED
    assert commands.final_outcome(state(state="TIMEOUT")).reason is Reason.TIMEOUT
    assert commands.final_outcome(state(state="OUT_OF_MEMORY")).reason is Reason.OOM
    lost = commands.final_outcome(state(state="NODE_FAIL", batch_host="n2"))
    assert lost.reason is Reason.LOST and "n2" in (lost.error or "")
    assert commands.final_outcome(state(state="BOOT_FAIL")).reason is Reason.LOST


def test_a_relay_that_could_not_run_the_job_ends_it_as_a_start_error_with_its_words():
    ended = commands.final_outcome(state(state="FAILED", exit_code=3, comment="jw1:error=no executor on n3"))
    assert (ended.reason, ended.error) == (Reason.START_ERROR, "no executor on n3")


def test_other_endings_are_lost_with_slurms_words():
    ended = commands.final_outcome(state(state="FAILED", reason="JobLaunchFailure", signal=9))
    assert ended.reason is Reason.LOST
    assert "FAILED, JobLaunchFailure, signal 9" in (ended.error or "")


def test_the_nodes_outcome_is_read_strictly():
    record = {
        "reason": "exit",
        "exit_code": 3,
        "signal": None,
        "error": None,
        "metrics": {"cpu_seconds": 1.5, "memory_peak_bytes": 100, "pids": "x", "bogus": 1, "oom_kills": -1},
    }
    outcome = commands.node_outcome(record)
    assert (outcome.reason, outcome.exit_code) == (Reason.EXIT, 3)
    assert (outcome.usage.cpu_seconds, outcome.usage.memory_peak_bytes, outcome.usage.pids) == (1.5, 100, 0)
    assert outcome.usage.oom_kills == 0
    assert commands.node_outcome({"reason": "pwned"}).reason is Reason.LOST
    assert commands.node_outcome("x").reason is Reason.LOST
    odd = commands.node_outcome({"reason": "signal", "exit_code": 999, "signal": 9, "error": "\x1b" * 5000})
    assert (odd.exit_code, odd.signal) == (None, 9) and len(odd.error or "") <= 2000


def test_sbatch_output_gives_the_job_id_or_an_error_in_words():
    assert commands.parse_job_id("123\n") == "123"
    assert commands.parse_job_id("123;cluster\n") == "123"
    with pytest.raises(commands.SlurmError):
        commands.parse_job_id("Submitted batch job 123")
    err = "sbatch: error: invalid partition specified: nope\nsbatch: error: Batch job submission failed\n"
    assert commands.first_error(err) == "invalid partition specified: nope"
    assert commands.first_error("", "") == "no word from Slurm"
    assert commands.first_error("\x1b]0;x\x07 evil") == "\\x1b]0;x\\x07 evil"


# ---- the backend's helpers


def test_a_partial_last_log_record_is_cut_off_for_resuming(tmp_path):
    log = tmp_path / "log"
    whole = HEADER.pack(1, 3) + b"abc" + HEADER.pack(2, 0)
    log.write_bytes(whole + HEADER.pack(1, 10) + b"abc")
    assert complete_length(str(log)) == len(whole)
    assert log.read_bytes() == whole
    log.write_bytes(whole + b"\x01\x00")
    assert complete_length(str(log)) == len(whole)
    assert complete_length(str(tmp_path / "none")) == 0


def test_the_node_job_request_carries_the_job_but_not_the_heads_own_fields():
    spec = LaunchSpec(argv=["python3", "-c", "1"], env={"A": "1"}, uid=1000, gid=1000, display=True)
    request = node_job_request(spec, "jw-12345678")
    assert request["command"] == ["python3", "-c", "1"] and request["display"] is True
    assert not {"owner", "holder", "artifacts", "backend", "placement"} & set(request)


def test_every_slurm_setting_has_help_and_the_section_is_named_slurm_backend():
    for name, trait in SlurmBackendConfig.class_traits(config=True).items():
        assert trait.help, name
    config = Config()
    config.SlurmBackend.poll_s = 0.25
    assert SlurmBackendConfig(config=config).poll_s == 0.25
    env = SlurmBackendConfig(slurm_conf="/x/slurm.conf").env()
    assert env == {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "SLURM_CONF": "/x/slurm.conf"}


def test_partitions_and_the_default_one_are_read_from_scontrol():
    out = (
        "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL Default=YES QoS=N/A State=UP\n"
        "PartitionName=gpu AllowGroups=ALL Default=NO State=UP\n"
        "PartitionName=bad;name Default=YES\n"
    )
    assert commands.parse_partitions(out) == (["debug", "gpu"], "debug")
    assert commands.parse_partitions("") == ([], None)


class HostileNode:
    """A node executor's answers as a relay that is not ours could give them (the job's user can
    point the Comment at a listener of their own): names that climb out, links, devices, files
    larger than they said, a folder that pages forever."""

    def __init__(self, tree: dict[str, Any], endless: str | None = None):
        self.tree = tree
        self.endless = endless
        self.calls = 0

    async def call(self, op: str, **params: Any) -> dict[str, Any]:
        self.calls += 1
        path = params["path"]
        if op == "files":
            if path == self.endless:
                return {"entries": [], "next_offset": params["offset"] + 1}
            folder = self.tree
            for part in [p for p in path.split("/") if p]:
                folder = folder[part]
            entries = [
                {"name": name, "kind": kind, "size": len(value) if kind == "file" else None}
                for name, value in folder.items()
                for kind in [("directory" if isinstance(value, dict) else value if isinstance(value, str) else "file")]
            ]
            return {"entries": entries, "next_offset": None}
        data = self._file(path)
        piece = data[params["offset"] : params["offset"] + params["max_bytes"]]
        return {"data": base64.b64encode(piece).decode(), "size": len(data)}

    def _file(self, path: str) -> bytes:
        value: Any = self.tree
        for part in path.split("/"):
            value = value[part]
        return value


def pull(tmp_path, node: HostileNode, budget: int = 1 << 20, reserve: int = 0) -> _Pull:
    work = tmp_path / "work"
    work.mkdir()
    found = _Pull(node, "job", os.getuid(), os.getgid(), budget, into=str(tmp_path))  # type: ignore[arg-type]
    found.reserve = reserve
    top = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    try:
        asyncio.run(found.folder("", top))
    finally:
        os.close(top)
    return found


def test_work_brought_back_keeps_plain_files_and_folders_and_skips_links_devices_and_unsafe_names(tmp_path):
    tree = {
        "a.txt": b"hello",
        "sub": {"b.bin": b"\x00" * 10, "..": b"climb", "link": "symlink"},
        "../../escape": b"x",
        "dev": "device",
        "ctl\x1b[2J": b"x",
        ".": b"x",
    }
    found = pull(tmp_path, HostileNode(tree))
    work = tmp_path / "work"
    assert (work / "a.txt").read_bytes() == b"hello"
    assert (work / "sub" / "b.bin").read_bytes() == b"\x00" * 10
    assert sorted(p.name for p in work.rglob("*")) == ["a.txt", "b.bin", "sub"]
    assert not (tmp_path / "escape").exists()
    assert found.skipped == 6


def test_work_brought_back_stops_at_its_cap_without_a_file_cut_short(tmp_path):
    found = pull(tmp_path, HostileNode({"a": b"1" * 600, "b": b"2" * 600}), budget=1000)
    assert found.capped
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["a"]


def test_a_folder_that_pages_forever_ends_the_pull(tmp_path, monkeypatch):
    monkeypatch.setattr(backend_module, "MAX_PULLED_ENTRIES", 50)
    node = HostileNode({"loop": {}}, endless="loop")
    found = pull(tmp_path, node)
    assert found.capped and node.calls <= 52


def test_a_node_jobs_work_is_not_brought_back_past_the_heads_disk_reserve(tmp_path):
    """A user's whole Slurm queue ending at once pulls every /work onto the head's disk: each
    piece is taken only while Policy.disk_reserve_bytes stays free, so the disk never fills."""
    node = HostileNode({"small.txt": b"kept", "zbig.bin": b"\x00" * (64 << 20)})
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    found = pull(tmp_path, node, budget=128 << 20, reserve=free - (2 << 20))  # room for 2 MiB of 64
    assert found.short_of_disk and found.capped
    assert sorted(os.listdir(tmp_path / "work")) == ["small.txt"]  # the big one not kept cut short


def test_a_relays_forged_metrics_out_of_range_are_dropped_not_recorded():
    """The metrics a head records for a Slurm job come through a relay its user can replace: NaN,
    infinities, negatives and 1e308 (which would widen every listing's row) are dropped."""
    forged = {"cpu_seconds": 1e308, "memory_bytes": float("nan"), "memory_peak_bytes": -1, "pids": 7}
    assert commands.usage_of(forged) == commands.usage_of({"pids": 7})
    assert commands.usage_of({"cpu_seconds": 12.5}).cpu_seconds == 12.5
